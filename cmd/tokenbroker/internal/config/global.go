package config

import (
	"cmp"
	"crypto/tls"
	"crypto/x509"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/tokenbroker/tokenbroker/api"
	"github.com/tokenbroker/tokenbroker/api/client"
	"github.com/tokenbroker/tokenbroker/broker/store/seal"
	"github.com/tokenbroker/tokenbroker/sources"
)

// loadPaths checks the socket and the state directory, or sets their
// defaults (a relative path was reported by decode).
func loadPaths(p *problems, g *Global, c *Config) {
	uid, what := os.Geteuid(), sources.QuoteValue(c.Socket)
	if c.Socket == "" {
		c.Socket = client.SocketFor(uid, os.Getenv)
		what = "the default " + sources.QuoteValue(c.Socket)
	}
	if len(c.Socket) > api.MaxSocketPath { // api.Listen's rule, said before it runs
		p.errorf(Prefix+"_SOCKET", "%s is %d bytes long, more than a Unix socket path may be (%d); set a shorter path", what, len(c.Socket), api.MaxSocketPath)
	}
	switch d, ok := DefaultStateDir(uid, os.Getenv); {
	case g.StateDir.set():
		c.StateDir = filepath.Clean(c.StateDir)
	case ok:
		c.StateDir = d
	default:
		p.errorf(Prefix+"_STATE_DIR", "not set, and neither XDG_STATE_HOME nor HOME is an absolute path to derive it from; set it")
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

// loadAccess checks the socket's mode and group, the metrics address and
// the encryption keys, and sets who may fetch tokens.
func loadAccess(p *problems, g *Global, c *Config) {
	c.Access = access(&g.AllowUids, &g.AllowGids)
	name, mode := Prefix+"_SOCKET_MODE", sources.QuoteValue(g.SocketMode.raw)
	switch m := c.SocketMode; {
	case g.SocketMode.err != nil: // reported by decode
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
	if v, name := c.MetricsAddr, Prefix+"_METRICS_ADDR"; v != "" {
		host, port, err := net.SplitHostPort(v)
		if _, perr := strconv.ParseUint(port, 10, 16); err != nil || perr != nil {
			p.errorf(name, "%s is not host:port; use e.g. 127.0.0.1:9464 (metrics hold no secret, but keep them off public interfaces)", sources.QuoteValue(v))
		} else if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
			p.warnf(name, "%s listens on every interface; metrics hold no secret, but prefer a loopback or internal address", sources.QuoteValue(v))
		}
	}
	if k := &g.EncryptionKey; k.ok() {
		keys, err := seal.ParseKeys(k.V.Reveal())
		if err != nil {
			p.errorf(k.given, "%v", err)
		}
		c.EncryptionKeys = keys
	}
}

// access is the caller lists as set; Set is false when neither is.
func access(uids, gids *IDs) api.Access {
	return api.Access{Set: uids.set() || gids.set(), UIDs: uids.V, GIDs: gids.V}
}

// loadRedis reads the fleet settings: one server by URL, or a Cluster or
// Sentinel by addresses.
func loadRedis(p *problems, r *Redis, c *Config) {
	urlName, addrsName := Prefix+"_REDIS_URL", Prefix+"_REDIS_ADDRS"
	// ContextTimeoutEnabled: the stores bound each command with a context
	// (OpTimeout, the lock lease); without it go-redis waits out its own
	// socket timeouts, 5 s against a paused or partitioned Redis.
	o := &redis.UniversalOptions{Username: r.RedisUsername.V, Password: r.RedisPassword.V.Reveal(), ContextTimeoutEnabled: true}
	switch {
	case r.RedisURL.given != "" && r.RedisAddrs.set():
		p.errorf(addrsName, "set together with %s; use the URL for one server, the addresses for Sentinel or Cluster", urlName)
		return
	case r.RedisURL.ok():
		opts, err := redis.ParseURL(r.RedisURL.V.Reveal())
		if err != nil { // the URL may hold a password: name the variable, not the value
			p.errorf(urlName, "not a valid Redis URL (%s); use redis://[user:password@]host:port/db or rediss://…", redactURLError(err))
			return
		}
		o.Addrs, o.DB, o.TLSConfig = []string{opts.Addr}, opts.DB, opts.TLSConfig
		o.Username, o.Password = cmp.Or(o.Username, opts.Username), cmp.Or(o.Password, opts.Password)
	case r.RedisURL.given != "": // reported by decode
		return
	case r.RedisAddrs.set():
		for _, a := range strings.FieldsFunc(r.RedisAddrs.V, isListSep) {
			if _, _, err := net.SplitHostPort(a); err != nil {
				p.errorf(addrsName, "%s is not host:port; list host:port addresses separated by commas", sources.QuoteValue(a))
			}
			o.Addrs = append(o.Addrs, a)
		}
		o.MasterName = r.RedisSentinelMaster.V
	case r.RedisSentinelMaster.set():
		p.errorf(Prefix+"_REDIS_SENTINEL_MASTER", "set without %s; list the sentinels' host:port there", addrsName)
		return
	default:
		ignored := map[string]bool{r.RedisPassword.given: true, Prefix + "_REDIS_USERNAME": r.RedisUsername.set(), Prefix + "_REDIS_CA_FILE": r.RedisCAFile.set()}
		for _, name := range slices.Sorted(maps.Keys(ignored)) {
			if name != "" && ignored[name] {
				p.warnf(name, "set, but no Redis is configured (%s or %s); it is ignored", urlName, addrsName)
			}
		}
		return
	}
	if path := r.RedisCAFile.V; path != "" {
		pem, err := os.ReadFile(path)
		pool := x509.NewCertPool()
		switch name := Prefix + "_REDIS_CA_FILE"; {
		case err != nil:
			p.errorf(name, "%v", fileError(sources.QuoteValue(path), err))
		case !pool.AppendCertsFromPEM(pem):
			p.errorf(name, "%s holds no PEM certificate; point it at the CA's PEM file", sources.QuoteValue(path))
		default:
			o.TLSConfig = cmp.Or(o.TLSConfig, &tls.Config{MinVersion: tls.VersionTLS12})
			o.TLSConfig.RootCAs = pool
		}
	}
	c.Redis = o
}

// redactURLError keeps the parse error's kind without the URL it quotes.
func redactURLError(err error) string {
	msg := err.Error()
	if i := strings.LastIndex(msg, ": "); i >= 0 {
		msg = msg[i+2:]
	}
	if strings.Contains(msg, "@") || strings.Contains(msg, "//") {
		return "unparsable"
	}
	return msg
}
