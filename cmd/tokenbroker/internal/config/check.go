package config

import (
	"cmp"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/oauth2"
	"golang.org/x/sys/unix"

	"github.com/tokenbroker/tokenbroker/api"
	"github.com/tokenbroker/tokenbroker/api/tokenfile"
	"github.com/tokenbroker/tokenbroker/sources"
)

// rows writes "key  value" lines, the values aligned.
type rows struct {
	w      io.Writer
	indent string
}

func (r rows) row(k, format string, args ...any) {
	fmt.Fprintf(r.w, "%-24s %s\n", r.indent+k, fmt.Sprintf(format, args...))
}

// WriteCheck writes the resolved configuration for people: every default
// made explicit, every secret as [redacted] with where it came from.
func WriteCheck(w io.Writer, c Config) {
	r := rows{w: w}
	r.row("socket", "%s", Printable(c.Socket))
	r.row("state dir", "%s", Printable(c.StateDir))
	r.row("log", "level %s, format %s", strings.ToLower(c.LogLevel.String()), cmp.Or(c.LogFormat, "auto (text on a terminal, json otherwise)"))
	r.row("refresh at", "%g of a token's lifetime", c.RefreshAt)
	r.row("request timeout", "%s", c.RequestTimeout)
	r.row("answer timeout", "%s", c.AnswerTimeout)
	r.row("handout wait", "%s", c.HandoutWait)
	r.row("backoff max", "%s", c.BackoffMax)
	r.row("probe interval", "%s", c.ProbeInterval)
	r.row("provider concurrency", "%d", c.ProviderConcurrency)
	if len(c.EncryptionKeys) == 0 {
		r.row("encryption", "%s", "NONE: stored tokens are plaintext (set TOKENBROKER_ENCRYPTION_KEY)")
	} else {
		ids := make([]string, len(c.EncryptionKeys))
		for i, k := range c.EncryptionKeys {
			ids[i] = k.ID
		}
		r.row("encryption", "AES-256-GCM, sealing with key %q, opening with %s", ids[0], strings.Join(ids, ", "))
	}
	group := ""
	if c.SocketGID > 0 {
		group = ", group " + strconv.Itoa(c.SocketGID)
	}
	r.row("socket access", "mode %04o%s; callers: %s", cmp.Or(c.SocketMode, api.DefaultMode), group, c.Access)
	if c.MetricsAddr != "" {
		r.row("metrics", "http://%s/metrics (and /metrics on the socket)", c.MetricsAddr)
	}
	r.row("store", "%s", storeLine(c))
	for _, cc := range c.Credentials {
		fmt.Fprintf(w, "\ncredential %s\n", cc.Name)
		writeCredential(rows{w, "  "}, cc)
	}
	if len(c.Warnings) > 0 {
		fmt.Fprintf(w, "\nwarnings:\n")
		for _, warn := range c.Warnings {
			fmt.Fprintf(w, "  %s\n", Printable(warn))
		}
	}
}

func storeLine(c Config) string {
	if c.Redis == nil {
		return "embedded (state dir only; set TOKENBROKER_REDIS_URL for a fleet)"
	}
	auth, tlsOn := "no password", ""
	if c.Redis.Password != "" {
		auth = "password [redacted]"
	}
	if c.Redis.TLSConfig != nil {
		tlsOn = ", TLS"
	}
	addrs := strings.Join(c.Redis.Addrs, ",")
	kind := "Redis " + addrs
	switch {
	case c.Redis.MasterName != "":
		kind = fmt.Sprintf("Redis Sentinel master %q via %s", c.Redis.MasterName, addrs)
	case len(c.Redis.Addrs) > 1:
		kind = "Redis Cluster " + addrs
	}
	return fmt.Sprintf("fleet: %s db %d (%s%s), prefix %q, lock lease %s, local copy in the state dir", kind, c.Redis.DB, auth, tlsOn, c.RedisPrefix, c.RedisLockTTL)
}

func writeCredential(r rows, cc Credential) {
	d := cc.Dialect.WithDefaults()
	auth := "params (client_id and client_secret as parameters)"
	if d.ClientAuth == oauth2.AuthStyleInHeader {
		auth = "basic (HTTP Basic)"
	}
	headers := make([]string, 0, len(d.Headers))
	for _, k := range slices.Sorted(maps.Keys(d.Headers)) {
		headers = append(headers, k+": "+d.Headers[k])
	}
	r.row("provider", "%s", cc.Provider)
	r.row("grant", "%s", cc.Grant)
	r.row("token URL", "%s", Printable(d.TokenURL))
	r.row("method", "%s", d.Method)
	r.row("parameters", "%s", d.Params)
	r.row("client auth", "%s", auth)
	r.row("scope separator", "%s", map[bool]string{true: "comma", false: "space"}[d.ScopeSeparator == ","])
	r.row("headers", "%s", Printable(cmp.Or(strings.Join(headers, "; "), "(none)")))
	r.row("lifetime fields", "%s", Printable(strings.Join(d.LifetimeFields, ", ")))
	r.row("token types", "%s", Printable(strings.Join(append([]string{"bearer"}, d.TokenTypes...), ", ")))
	r.row("default lifetime", "%s", d.DefaultLifetime)
	if f := cc.TokenFile; f.Path != "" {
		r.row("token file", "%s", tokenFileLine(f))
	}
	if cc.Grant == sources.RefreshToken {
		r.row("refresh sends secret", "%t", !d.RefreshOmitsSecret)
		r.row("refresh sends redirect", "%t", d.RefreshSendsRedirect)
	}
	writeClient(r, cc)
}

func writeClient(r rows, cc Credential) {
	r.row("client id", "%s", Printable(cc.Client.ID))
	r.row("client secret", "%s", secretLine(cc.Client.Secret, cc.Sources["CLIENT_SECRET"]))
	if !cc.Client.PreviousSecret.IsZero() {
		r.row("previous secret", "%s, tried once when the current one is refused", secretLine(cc.Client.PreviousSecret, cc.Sources["CLIENT_SECRET_PREVIOUS"]))
	}
	if cc.Access.Set {
		r.row("callers", "%s", cc.Access)
	}
	r.row("scopes", "%s", Printable(cmp.Or(strings.Join(cc.Client.Scopes, " "), "(none)")))
	if cc.Client.RedirectURI != "" {
		r.row("redirect URI", "%s", Printable(cc.Client.RedirectURI))
	}
	if cc.Username != "" {
		r.row("username", "%s", Printable(cc.Username))
	}
	if cc.Grant == sources.Password || !cc.Password.IsZero() {
		r.row("password", "%s", secretLine(cc.Password, cc.Sources["PASSWORD"]))
	}
	if cc.Grant == sources.RefreshToken || !cc.RefreshToken.IsZero() {
		r.row("refresh token", "%s", secretLine(cc.RefreshToken, cc.Sources["REFRESH_TOKEN"]))
	}
}

func secretLine(s sources.Secret, from string) string {
	if s.IsZero() {
		return "(none)"
	}
	return fmt.Sprintf("%v from %s", s, Printable(from))
}

func tokenFileLine(f tokenfile.File) string {
	s := fmt.Sprintf("%s (%s, mode %04o", Printable(f.Path), f.Format, f.Mode)
	if f.GID > 0 {
		s += ", group " + strconv.Itoa(f.GID)
	}
	if f.Signal != 0 {
		s += fmt.Sprintf(", %s to the pid in %s", unix.SignalName(f.Signal), Printable(f.PIDFile))
	}
	return s + "; removed while there is no token)"
}
