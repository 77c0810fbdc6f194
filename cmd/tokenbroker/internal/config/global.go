package config

import (
	"net"
	"os"
	"path/filepath"
	"strconv"

	"github.com/tokenbroker/tokenbroker/api"
	"github.com/tokenbroker/tokenbroker/api/client"
	"github.com/tokenbroker/tokenbroker/broker/store/seal"
	"github.com/tokenbroker/tokenbroker/sources"
)

// maxSocketPathLen: sun_path is 108 bytes on Linux, with the NUL.
const maxSocketPathLen = 107

// loadPaths sets the socket and the state directory, or their defaults.
func loadPaths(p *problems, g *Global, c *Config) {
	uid := os.Geteuid()
	name, what := Prefix+"_SOCKET", sources.QuoteValue(g.Socket.V)
	if c.Socket = g.Socket.V; c.Socket == "" {
		c.Socket = client.SocketFor(uid, os.Getenv)
		what = "the default " + sources.QuoteValue(c.Socket)
	}
	if !filepath.IsAbs(c.Socket) {
		p.errorf(name, "%s is not an absolute path; use one, e.g. /run/tokenbroker/tokenbroker.sock", what)
	}
	if len(c.Socket) > maxSocketPathLen {
		p.errorf(name, "%s is %d bytes long, more than a Unix socket path may be (%d); set a shorter path", what, len(c.Socket), maxSocketPathLen)
	}
	name = Prefix + "_STATE_DIR"
	switch d, ok := DefaultStateDir(uid, os.Getenv); {
	case g.StateDir.set():
		if !filepath.IsAbs(g.StateDir.V) {
			p.errorf(name, "%s is not an absolute path; use one, e.g. /var/lib/tokenbroker", sources.QuoteValue(g.StateDir.V))
		}
		c.StateDir = filepath.Clean(g.StateDir.V)
	case ok:
		c.StateDir = d
	default:
		p.errorf(name, "not set, and neither XDG_STATE_HOME nor HOME is an absolute path to derive it from; set it")
	}
}

// DefaultStateDir is the state directory when TOKENBROKER_STATE_DIR is
// unset. Relative XDG paths are ignored, as the XDG spec says.
func DefaultStateDir(uid int, getenv func(string) string) (string, bool) {
	if uid == 0 {
		return "/var/lib/tokenbroker", true
	}
	if d := getenv("XDG_STATE_HOME"); filepath.IsAbs(d) {
		return filepath.Join(d, "tokenbroker"), true
	}
	if h := getenv("HOME"); filepath.IsAbs(h) {
		return filepath.Join(h, ".local", "state", "tokenbroker"), true
	}
	return "", false
}

// loadSocketAccess checks the socket's mode and sets its group, and the
// metrics address.
func loadSocketAccess(p *problems, g *Global, c *Config) {
	name, mode := Prefix+"_SOCKET_MODE", sources.QuoteValue(g.SocketMode.raw)
	switch m := g.SocketMode.V; {
	case g.SocketMode.err != nil:
	case m&^0o666 != 0:
		p.errorf(name, "%s sets bits beyond read and write; use e.g. 0660", mode)
	case m&0o200 == 0:
		p.errorf(name, "%s does not let the broker's own user connect (tokenbroker status would fail); use e.g. 0660", mode)
	case m&0o002 != 0:
		p.warnf(name, "%s lets every local user connect; restrict callers with TOKENBROKER_ALLOW_UIDS/_ALLOW_GIDS", mode)
	}
	switch name, gids := Prefix+"_SOCKET_GROUP", g.SocketGroup.V; {
	case len(gids) > 1:
		p.errorf(name, "names %d groups; name one", len(gids))
	case len(gids) == 1 && gids[0] == 0:
		p.errorf(name, "is root's group; name the group whose members may connect")
	case len(gids) == 1:
		c.SocketGID = int(gids[0])
	}
	if v := g.MetricsAddr.V; v != "" {
		name := Prefix + "_METRICS_ADDR"
		host, port, err := net.SplitHostPort(v)
		if _, perr := strconv.ParseUint(port, 10, 16); err != nil || perr != nil {
			p.errorf(name, "%s is not host:port; use e.g. 127.0.0.1:9464 (metrics hold no secret, but keep them off public interfaces)", sources.QuoteValue(v))
			return
		}
		c.MetricsAddr = v
		if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
			p.warnf(name, "%s listens on every interface; metrics hold no secret, but prefer a loopback or internal address", sources.QuoteValue(v))
		}
	}
}

// access is the caller lists as set; Set is false when neither is.
func access(uids, gids *IDs) api.Access {
	return api.Access{Set: uids.set() || gids.set(), UIDs: uids.V, GIDs: gids.V}
}

// loadEncryptionKeys parses TOKENBROKER_ENCRYPTION_KEY, or its _FILE.
func loadEncryptionKeys(p *problems, g *Global, c *Config) {
	if k := &g.EncryptionKey; k.ok() {
		keys, err := seal.ParseKeys(k.V.Reveal())
		if err != nil {
			p.errorf(k.given, "%v", err)
		}
		c.EncryptionKeys = keys
	}
}
