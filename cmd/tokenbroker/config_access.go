package main

import (
	"net"
	"os"
	"os/user"
	"strconv"
	"strings"

	"github.com/tokenbroker/tokenbroker/api"
)

// Access and socket settings, by suffix after TOKENBROKER_ (global) or
// TOKENBROKER_<NAME>_ (per credential, for the ALLOW lists).
const (
	varMetricsAddr          = "METRICS_ADDR"
	varMetricsPerCredential = "METRICS_PER_CREDENTIAL"
	varSocketMode           = "SOCKET_MODE"
	varSocketGroup          = "SOCKET_GROUP"
	varAllowUIDs            = "ALLOW_UIDS"
	varAllowGIDs            = "ALLOW_GIDS"
)

// loadAccess reads the socket's mode and group, the metrics address and the
// global caller lists.
func loadAccess(p *problems, vars map[string]string, c *Config) {
	get := func(s string) (string, string, bool) {
		name := envPrefix + s
		v := strings.TrimSpace(vars[name])
		return name, v, v != ""
	}
	if name, v, ok := get(varMetricsAddr); ok {
		host, port, err := net.SplitHostPort(v)
		if n, perr := strconv.Atoi(port); err != nil || perr != nil || n < 0 || n > 65535 {
			p.errorf(name, "%s is not host:port; use e.g. 127.0.0.1:9464 (metrics hold no secret, but keep them off public interfaces)", show(v))
		} else {
			c.MetricsAddr = v
			if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
				p.warnf(name, "%s listens on every interface; metrics hold no secret, but prefer a loopback or internal address", show(v))
			}
		}
	}
	if name, v, ok := get(varMetricsPerCredential); ok {
		on, valid := parseBool(v)
		if !valid {
			p.errorf(name, "%s is not true or false; true adds 8 series per credential to /metrics (handouts and refreshes by credential)", show(v))
		}
		c.MetricsPerCredential = on
	}
	if name, v, ok := get(varSocketMode); ok {
		m, err := strconv.ParseUint(v, 8, 32)
		switch {
		case err != nil:
			p.errorf(name, "%s is not an octal mode; use e.g. 0660 (owner and group may connect)", show(v))
		case m&^0o666 != 0:
			p.errorf(name, "%s sets bits beyond read and write; use e.g. 0660", show(v))
		case m&0o200 == 0:
			p.errorf(name, "%s does not let the broker's own user connect (tokenbroker status would fail); use e.g. 0660", show(v))
		default:
			c.SocketMode = os.FileMode(m)
			if m&0o002 != 0 {
				p.warnf(name, "%s lets every local user connect; restrict callers with TOKENBROKER_ALLOW_UIDS/_ALLOW_GIDS", show(v))
			}
		}
	}
	if name, v, ok := get(varSocketGroup); ok {
		gids, ok := parseIDs(p, name, v, lookupGroup, "group")
		switch {
		case !ok:
		case len(gids) != 1:
			p.errorf(name, "names %d groups; name one", len(gids))
		case gids[0] == 0:
			p.errorf(name, "is root's group; name the group whose members may connect")
		default:
			c.SocketGID = int(gids[0])
		}
	}
	c.Access = readAccess(p, vars, envPrefix)
}

// readAccess reads prefix+ALLOW_UIDS and prefix+ALLOW_GIDS.
func readAccess(p *problems, vars map[string]string, prefix string) api.Access {
	var a api.Access
	if v := strings.TrimSpace(vars[prefix+varAllowUIDs]); v != "" {
		a.UIDs, _ = parseIDs(p, prefix+varAllowUIDs, v, lookupUser, "user")
		a.Set = true
	}
	if v := strings.TrimSpace(vars[prefix+varAllowGIDs]); v != "" {
		a.GIDs, _ = parseIDs(p, prefix+varAllowGIDs, v, lookupGroup, "group")
		a.Set = true
	}
	return a
}

// parseIDs reads a comma- or space-separated list of numeric ids or names.
func parseIDs(p *problems, name, v string, lookup func(string) (uint32, error), kind string) ([]uint32, bool) {
	var ids []uint32
	ok := true
	for _, f := range strings.FieldsFunc(v, func(r rune) bool { return r == ',' || unicodeSpace(r) }) {
		if n, err := strconv.ParseUint(f, 10, 32); err == nil {
			ids = append(ids, uint32(n))
			continue
		}
		id, err := lookup(f)
		if err != nil {
			p.errorf(name, "%s is neither a number nor a known %s on this host; use a numeric id or an existing %s name", show(f), kind, kind)
			ok = false
			continue
		}
		ids = append(ids, id)
	}
	return ids, ok
}

func lookupUser(n string) (uint32, error) {
	u, err := user.Lookup(n)
	if err != nil {
		return 0, err
	}
	id, err := strconv.ParseUint(u.Uid, 10, 32)
	return uint32(id), err
}

func lookupGroup(n string) (uint32, error) {
	g, err := user.LookupGroup(n)
	if err != nil {
		return 0, err
	}
	id, err := strconv.ParseUint(g.Gid, 10, 32)
	return uint32(id), err
}

func socketGroupNote(gid int) string {
	if gid <= 0 {
		return ""
	}
	return ", group " + strconv.Itoa(gid)
}
