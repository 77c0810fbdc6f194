package config

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/tokenbroker/tokenbroker/sources"
)

// loadRedis reads the fleet settings: one server by URL, or a Cluster or
// Sentinel by addresses.
func loadRedis(p *problems, r *Redis, c *Config) {
	c.RedisPrefix, c.RedisLockTTL = r.RedisPrefix.V, r.RedisLockTTL.V
	urlName, addrsName := Prefix+"_REDIS_URL", Prefix+"_REDIS_ADDRS"
	o := &redis.UniversalOptions{}
	switch {
	case r.RedisURL.given != "" && r.RedisAddrs.set():
		p.errorf(addrsName, "set together with %s; use the URL for one server, the addresses for Sentinel or Cluster", urlName)
		return
	case r.RedisURL.ok():
		opts, err := redis.ParseURL(r.RedisURL.V.Reveal())
		if err != nil {
			// The URL may hold a password: name the variable, not the value.
			p.errorf(urlName, "not a valid Redis URL (%s); use redis://[user:password@]host:port/db or rediss://…", redactURLError(err))
			return
		}
		o.Addrs, o.Username, o.Password, o.DB, o.TLSConfig = []string{opts.Addr}, opts.Username, opts.Password, opts.DB, opts.TLSConfig
	case r.RedisURL.given != "":
		return // decode reported it
	case r.RedisAddrs.set():
		for _, a := range strings.FieldsFunc(r.RedisAddrs.V, func(r rune) bool { return r == ',' || r == ' ' }) {
			if _, _, err := net.SplitHostPort(a); err != nil {
				p.errorf(addrsName, "%s is not host:port; list host:port addresses separated by commas", sources.QuoteValue(a))
				return
			}
			o.Addrs = append(o.Addrs, a)
		}
		o.MasterName = r.RedisSentinelMaster.V
	case r.RedisSentinelMaster.set():
		p.errorf(Prefix+"_REDIS_SENTINEL_MASTER", "set without %s; list the sentinels' host:port there", addrsName)
		return
	default:
		for _, name := range []string{r.RedisPassword.given, ifSet(r.RedisUsername, "USERNAME"), ifSet(r.RedisCAFile, "CA_FILE")} {
			if name != "" {
				p.warnf(name, "set, but no Redis is configured (TOKENBROKER_REDIS_URL or _ADDRS); it is ignored")
			}
		}
		return
	}
	if r.RedisUsername.set() {
		o.Username = r.RedisUsername.V
	}
	if r.RedisPassword.ok() {
		o.Password = r.RedisPassword.V.Reveal()
	}
	loadRedisCA(p, r.RedisCAFile.V, o)
	c.Redis = o
}

// ifSet is Redis setting TOKENBROKER_REDIS_<suffix> when v is set, or "".
func ifSet(v Value[string], suffix string) string {
	if v.set() {
		return Prefix + "_REDIS_" + suffix
	}
	return ""
}

func loadRedisCA(p *problems, path string, o *redis.UniversalOptions) {
	if path == "" {
		return
	}
	name := Prefix + "_REDIS_CA_FILE"
	pem, err := os.ReadFile(path)
	pool := x509.NewCertPool()
	switch {
	case err != nil:
		p.errorf(name, "%s cannot be read: %v; fix the path", sources.QuoteValue(path), errors.Unwrap(err))
	case !pool.AppendCertsFromPEM(pem):
		p.errorf(name, "%s holds no PEM certificate; point it at the CA's PEM file", sources.QuoteValue(path))
	default:
		if o.TLSConfig == nil {
			o.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		o.TLSConfig.RootCAs = pool
	}
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
