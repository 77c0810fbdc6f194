package api

import (
	"cmp"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// Access says which callers may fetch a credential's token, by the kernel's
// account of the connecting process (SO_PEERCRED). A caller is let in when
// its uid is in UIDs, or its primary or any supplementary group is in
// GIDs. The broker's own user and root are always let in: they can read the
// broker's configuration and state anyway.
type Access struct {
	Set  bool // false: every caller that can connect to the socket
	UIDs []uint32
	GIDs []uint32
}

func (a Access) String() string {
	if !a.Set {
		return "any process that can connect to the socket"
	}
	var parts []string
	if len(a.UIDs) > 0 {
		parts = append(parts, "uids "+joinIDs(a.UIDs))
	}
	if len(a.GIDs) > 0 {
		parts = append(parts, "gids "+joinIDs(a.GIDs))
	}
	if len(parts) == 0 {
		return "nobody but the broker's own user and root"
	}
	return strings.Join(parts, ", ") + " (and the broker's own user and root)"
}

func joinIDs(ids []uint32) string {
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = strconv.FormatUint(uint64(id), 10)
	}
	return strings.Join(s, ",")
}

// Peer is the process at the other end of a socket connection, as the
// kernel recorded it when the process connected.
type Peer struct {
	UID, GID uint32
	PID      int32

	pidfd int // -1 when none; pins the process so /proc reads are its own

	once   sync.Once
	groups []uint32 // supplementary groups, from /proc
	exe    string   // executable path, from /proc; "" when unknown
	procOK bool     // the /proc reads belong to the connecting process
}

type peerKey struct{}

// PeerFrom returns the peer of the connection a request came on, or nil
// when it is unknown (not a Unix socket, or not Linux).
func PeerFrom(ctx context.Context) *Peer {
	p, _ := ctx.Value(peerKey{}).(*Peer)
	return p
}

// Groups returns the caller's supplementary groups; ok is false when they
// could not be read for certain (the process exited, or /proc is hidden).
func (p *Peer) Groups() ([]uint32, bool) {
	p.once.Do(p.readProc)
	return p.groups, p.procOK
}

// Exe returns the caller's executable path, "" when unknown.
func (p *Peer) Exe() string {
	p.once.Do(p.readProc)
	return p.exe
}

func (p *Peer) String() string {
	return fmt.Sprintf("uid %d gid %d pid %d", p.UID, p.GID, p.PID)
}

// allows reports whether peer may fetch a token under a. self is the
// broker's uid.
func (a Access) allows(p *Peer, self uint32) bool {
	if !a.Set {
		return true
	}
	if p == nil {
		return false // an access rule needs the kernel's word on the caller
	}
	if p.UID == 0 || p.UID == self || slices.Contains(a.UIDs, p.UID) {
		return true
	}
	if len(a.GIDs) == 0 {
		return false
	}
	if slices.Contains(a.GIDs, p.GID) {
		return true
	}
	groups, ok := p.Groups()
	if !ok {
		return false
	}
	for _, g := range groups {
		if slices.Contains(a.GIDs, g) {
			return true
		}
	}
	return false
}

// isAdmin reports whether p may change what the broker holds (authorize):
// the broker's own user or root.
func isAdmin(p *Peer, self uint32) bool {
	return p != nil && (p.UID == 0 || p.UID == self)
}

// peers tracks each connection's Peer so its pidfd is closed with it.
type peers struct{ m sync.Map }

func (ps *peers) connContext(ctx context.Context, c net.Conn) context.Context {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return ctx
	}
	p := peerOf(uc)
	if p == nil {
		return ctx
	}
	ps.m.Store(c, p)
	return context.WithValue(ctx, peerKey{}, p)
}

func (ps *peers) connState(c net.Conn, s http.ConnState) {
	if s != http.StateClosed && s != http.StateHijacked {
		return
	}
	if v, ok := ps.m.LoadAndDelete(c); ok {
		v.(*Peer).close()
	}
}

var selfUID = uint32(os.Geteuid())

// allowed answers 403 and writes one audit line when the request's caller
// may not act on name; what says what it asked to do.
func (s *Server) allowed(w http.ResponseWriter, r *http.Request, name, what string) bool {
	a, ok := s.access[name]
	if !ok || !a.Set {
		return true
	}
	p := PeerFrom(r.Context())
	if a.allows(p, selfUID) {
		return true
	}
	s.metrics.denied(name)
	if p == nil {
		s.log.Warn("access denied: the caller's identity is unknown", "credential", name, "path", logSafe(r.URL.EscapedPath()))
		writeError(w, http.StatusForbidden, "access_denied", fmt.Sprintf(
			"credential %q: the broker cannot tell who this caller is, and only listed users and groups may %s; connect over the Unix socket on Linux", name, what))
		return false
	}
	s.log.Warn("access denied", "credential", name, "uid", p.UID, "gid", p.GID, "pid", p.PID,
		"exe", cmp.Or(p.Exe(), "unknown"), "allowed", a.String())
	writeError(w, http.StatusForbidden, "access_denied", fmt.Sprintf(
		"credential %q: this caller (uid %d, gid %d) may not %s; the operator lists who may in TOKENBROKER_%s_ALLOW_UIDS or _ALLOW_GIDS",
		name, p.UID, p.GID, what, envName(name)))
	return false
}

// envName is name as it appears in variable names.
func envName(name string) string {
	return strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// requireHeader refuses /v1/ requests without "X-Tokenbroker: 1". A browser
// cannot send it cross-origin without a preflight the broker never grants,
// and an HTTP proxy on the host that forwards to the socket does not add
// it, so neither can be turned into a token oracle.
func requireHeader(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/v1/") {
			if v := r.Header["X-Tokenbroker"]; len(v) != 1 || v[0] != "1" {
				writeError(w, http.StatusBadRequest, "header_required",
					"send the header X-Tokenbroker: 1 with every /v1/ request (curl -H 'X-Tokenbroker: 1'); it keeps a confused proxy or a browser from fetching tokens")
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}
