package config

import (
	"cmp"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/oauth2"

	"github.com/tokenbroker/tokenbroker/api"
	"github.com/tokenbroker/tokenbroker/sources"
)

// checkKeyWidth aligns WriteCheck's values.
const checkKeyWidth = 24

type rows struct{ w io.Writer }

func (r rows) row(indent, k, format string, args ...any) {
	fmt.Fprintf(r.w, "%-*s %s\n", checkKeyWidth, indent+k, fmt.Sprintf(format, args...))
}

// WriteCheck writes the resolved configuration for people: every default
// made explicit, every secret as [redacted] with where it came from.
func WriteCheck(w io.Writer, c Config) {
	r := rows{w}
	format := cmp.Or(c.LogFormat, "auto (text on a terminal, json otherwise)")
	r.row("", "socket", "%s", Printable(c.Socket))
	r.row("", "state dir", "%s", Printable(c.StateDir))
	r.row("", "log", "level %s, format %s", strings.ToLower(c.LogLevel.String()), format)
	r.row("", "refresh at", "%g of a token's lifetime", c.RefreshAt)
	r.row("", "request timeout", "%s", c.RequestTimeout)
	r.row("", "answer timeout", "%s", c.AnswerTimeout)
	r.row("", "handout wait", "%s", c.HandoutWait)
	r.row("", "backoff max", "%s", c.BackoffMax)
	r.row("", "probe interval", "%s", c.ProbeInterval)
	r.row("", "provider concurrency", "%d", c.ProviderConcurrency)
	if len(c.EncryptionKeys) == 0 {
		r.row("", "encryption", "%s", "NONE: stored tokens are plaintext (set TOKENBROKER_ENCRYPTION_KEY)")
	} else {
		ids := make([]string, len(c.EncryptionKeys))
		for i, k := range c.EncryptionKeys {
			ids[i] = k.ID
		}
		r.row("", "encryption", "AES-256-GCM, sealing with key %q, opening with %s", ids[0], strings.Join(ids, ", "))
	}
	group := ""
	if c.SocketGID > 0 {
		group = ", group " + strconv.Itoa(c.SocketGID)
	}
	r.row("", "socket access", "mode %04o%s; callers: %s", cmp.Or(c.SocketMode, api.DefaultMode), group, c.Access)
	if c.MetricsAddr != "" {
		r.row("", "metrics", "http://%s/metrics (and /metrics on the socket)", c.MetricsAddr)
	}
	r.row("", "store", "%s", storeLine(c))
	for _, cc := range c.Credentials {
		fmt.Fprintf(w, "\ncredential %s\n", cc.Name)
		writeCredential(r, cc)
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
	auth := "no password"
	if c.Redis.Password != "" {
		auth = "password [redacted]"
	}
	tlsOn := ""
	if c.Redis.TLSConfig != nil {
		tlsOn = ", TLS"
	}
	kind := "Redis " + strings.Join(c.Redis.Addrs, ",")
	switch {
	case c.Redis.MasterName != "":
		kind = fmt.Sprintf("Redis Sentinel master %q via %s", c.Redis.MasterName, strings.Join(c.Redis.Addrs, ","))
	case len(c.Redis.Addrs) > 1:
		kind = "Redis Cluster " + strings.Join(c.Redis.Addrs, ",")
	}
	return fmt.Sprintf("fleet: %s db %d (%s%s), prefix %q, lock lease %s, local copy in the state dir", kind, c.Redis.DB, auth, tlsOn, c.RedisPrefix, c.RedisLockTTL)
}

func writeCredential(r rows, cc Credential) {
	d := &cc.Dialect
	const in = "  "
	r.row(in, "provider", "%s", cc.Provider)
	r.row(in, "grant", "%s", cc.Grant)
	r.row(in, "token URL", "%s", Printable(d.TokenURL))
	r.row(in, "method", "%s", cmp.Or(d.Method, http.MethodPost))
	params := cmp.Or(d.Params, sources.InBody)
	if d.Method == http.MethodGet {
		params = sources.InQuery
	}
	r.row(in, "parameters", "%s", params)
	auth := "params (client_id and client_secret as parameters)"
	if d.ClientAuth == oauth2.AuthStyleInHeader {
		auth = "basic (HTTP Basic)"
	}
	r.row(in, "client auth", "%s", auth)
	r.row(in, "scope separator", "%s", map[bool]string{true: "comma", false: "space"}[d.ScopeSeparator == ","])
	r.row(in, "headers", "%s", headerList(d.Headers))
	r.row(in, "lifetime fields", "%s", Printable(strings.Join(cmpOrSlice(d.LifetimeFields, []string{"expires_in", "token_expires_in"}), ", ")))
	r.row(in, "token types", "%s", Printable(strings.Join(append([]string{"bearer"}, d.TokenTypes...), ", ")))
	r.row(in, "default lifetime", "%s", cmp.Or(d.DefaultLifetime, sources.DefaultLifetime))
	if cc.Grant == sources.RefreshToken {
		r.row(in, "refresh sends secret", "%t", !d.RefreshOmitsSecret)
		r.row(in, "refresh sends redirect", "%t", d.RefreshSendsRedirect)
	}
	writeClient(r, cc)
}

func writeClient(r rows, cc Credential) {
	const in = "  "
	r.row(in, "client id", "%s", Printable(cc.Client.ID))
	r.row(in, "client secret", "%s", secretLine(cc.Client.Secret, cc.Sources["CLIENT_SECRET"]))
	if !cc.Client.PreviousSecret.IsZero() {
		r.row(in, "previous secret", "%s, tried once when the current one is refused", secretLine(cc.Client.PreviousSecret, cc.Sources["CLIENT_SECRET_PREVIOUS"]))
	}
	if cc.Access.Set {
		r.row(in, "callers", "%s", cc.Access)
	}
	r.row(in, "scopes", "%s", Printable(cmp.Or(strings.Join(cc.Client.Scopes, " "), "(none)")))
	if cc.Client.RedirectURI != "" {
		r.row(in, "redirect URI", "%s", Printable(cc.Client.RedirectURI))
	}
	if cc.Username != "" {
		r.row(in, "username", "%s", Printable(cc.Username))
	}
	if cc.Grant == sources.Password || !cc.Password.IsZero() {
		r.row(in, "password", "%s", secretLine(cc.Password, cc.Sources["PASSWORD"]))
	}
	if cc.Grant == sources.RefreshToken || !cc.RefreshToken.IsZero() {
		r.row(in, "refresh token", "%s", secretLine(cc.RefreshToken, cc.Sources["REFRESH_TOKEN"]))
	}
}

func secretLine(s sources.Secret, from string) string {
	if s.IsZero() {
		return "(none)"
	}
	return fmt.Sprintf("%v from %s", s, Printable(from))
}

func headerList(h map[string]string) string {
	if len(h) == 0 {
		return "(none)"
	}
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + ": " + h[k]
	}
	return Printable(strings.Join(parts, "; "))
}
