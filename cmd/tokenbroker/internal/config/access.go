package config

import (
	"net"
	"os"
	"strconv"

	"github.com/tokenbroker/tokenbroker/api"
)

// loadAccess reads the socket's mode and group, the metrics address and the
// global caller lists.
func loadAccess(p *problems, g *Global, c *Config) {
	if v := g.MetricsAddr.V; v != "" {
		name := Prefix + "_METRICS_ADDR"
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
	c.SocketMode = os.FileMode(g.SocketMode.V)
	if g.SocketMode.V&0o002 != 0 {
		p.warnf(Prefix+"_SOCKET_MODE", "%s lets every local user connect; restrict callers with TOKENBROKER_ALLOW_UIDS/_ALLOW_GIDS", show(g.SocketMode.raw))
	}
	if gids, msg := g.SocketGroup.resolve("group"); g.SocketGroup.set() && msg == "" {
		switch name := Prefix + "_SOCKET_GROUP"; {
		case len(gids) != 1:
			p.errorf(name, "names %d groups; name one", len(gids))
		case gids[0] == 0:
			p.errorf(name, "is root's group; name the group whose members may connect")
		default:
			c.SocketGID = int(gids[0])
		}
	}
	c.Access = access(&g.AllowUids, &g.AllowGids)
}

// access is the caller lists as set; Set is false when neither is.
func access(uids, gids *IDs) api.Access {
	a := api.Access{Set: uids.set() || gids.set()}
	a.UIDs, _ = uids.resolve("user")
	a.GIDs, _ = gids.resolve("group")
	return a
}
