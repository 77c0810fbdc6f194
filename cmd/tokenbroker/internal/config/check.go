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

// WriteCheck writes the resolved configuration for people: every default
// made explicit, every secret as [redacted] with where it came from.
func WriteCheck(w io.Writer, c Config) {
	row := func(k string, v any) { fmt.Fprintf(w, "%-24s %v\n", k, v) }
	row("socket", Printable(c.Socket))
	row("state dir", Printable(c.StateDir))
	row("log", fmt.Sprintf("level %s, format %s", strings.ToLower(c.LogLevel.String()), cmp.Or(c.LogFormat, "auto (text on a terminal, json otherwise)")))
	row("refresh at", fmt.Sprintf("%g of a token's lifetime", c.RefreshAt))
	row("request timeout", c.RequestTimeout)
	row("answer timeout", c.AnswerTimeout)
	row("handout wait", c.HandoutWait)
	row("backoff max", c.BackoffMax)
	row("probe interval", c.ProbeInterval)
	row("provider concurrency", c.ProviderConcurrency)
	ids := make([]string, len(c.EncryptionKeys))
	for i, k := range c.EncryptionKeys {
		ids[i] = k.ID
	}
	if len(ids) == 0 {
		row("encryption", "NONE: stored tokens are plaintext (set TOKENBROKER_ENCRYPTION_KEY)")
	} else {
		row("encryption", fmt.Sprintf("AES-256-GCM, sealing with key %q, opening with %s", ids[0], strings.Join(ids, ", ")))
	}
	group := ""
	if c.SocketGID > 0 {
		group = fmt.Sprintf(", group %d", c.SocketGID)
	}
	row("socket access", fmt.Sprintf("mode %04o%s; callers: %s", cmp.Or(c.SocketMode, api.DefaultMode), group, c.Access))
	if c.MetricsAddr != "" {
		row("metrics", fmt.Sprintf("http://%s/metrics (and /metrics on the socket)", c.MetricsAddr))
	}
	row("store", storeLine(c))
	for _, cc := range c.Credentials {
		fmt.Fprintf(w, "\ncredential %s\n", cc.Name)
		writeCredential(func(k string, v any) { row("  "+k, v) }, cc)
	}
	if len(c.Warnings) > 0 {
		fmt.Fprintf(w, "\nwarnings:\n")
		for _, warn := range c.Warnings {
			fmt.Fprintf(w, "  %s\n", Printable(warn))
		}
	}
}

func storeLine(c Config) string {
	r := c.Redis
	if r == nil {
		return "embedded (state dir only; set TOKENBROKER_REDIS_URL for a fleet)"
	}
	kind, auth, tls := "Redis ", "no password", ""
	switch {
	case r.MasterName != "":
		kind = fmt.Sprintf("Redis Sentinel master %q via ", r.MasterName)
	case len(r.Addrs) > 1:
		kind = "Redis Cluster "
	}
	if r.Password != "" {
		auth = "password [redacted]"
	}
	if r.TLSConfig != nil {
		tls = ", TLS"
	}
	return fmt.Sprintf("fleet: %s%s db %d (%s%s), prefix %q, lock lease %s, local copy in the state dir",
		kind, strings.Join(r.Addrs, ","), r.DB, auth, tls, c.RedisPrefix, c.RedisLockTTL)
}

func writeCredential(row func(k string, v any), cc Credential) {
	d := cc.Dialect.WithDefaults()
	auth, sep := "params (client_id and client_secret as parameters)", "space"
	if d.ClientAuth == oauth2.AuthStyleInHeader {
		auth = "basic (HTTP Basic)"
	}
	if d.ScopeSeparator == "," {
		sep = "comma"
	}
	var headers []string
	for _, k := range slices.Sorted(maps.Keys(d.Headers)) {
		headers = append(headers, k+": "+d.Headers[k])
	}
	secret := func(s sources.Secret, setting string) string {
		if s.IsZero() {
			return "(none)"
		}
		return fmt.Sprintf("%v from %s", s, Printable(cc.Sources[setting]))
	}
	row("provider", cc.Provider)
	row("grant", cc.Grant)
	row("token URL", Printable(d.TokenURL))
	row("method", d.Method)
	row("parameters", d.Params)
	row("client auth", auth)
	row("scope separator", sep)
	row("headers", Printable(cmp.Or(strings.Join(headers, "; "), "(none)")))
	row("lifetime fields", Printable(strings.Join(d.LifetimeFields, ", ")))
	row("token types", Printable(strings.Join(append([]string{"bearer"}, d.TokenTypes...), ", ")))
	row("default lifetime", d.DefaultLifetime)
	if f := cc.TokenFile; f.Path != "" {
		row("token file", tokenFileLine(f))
	}
	if cc.Grant == sources.RefreshToken {
		row("refresh sends secret", !d.RefreshOmitsSecret)
		row("refresh sends redirect", d.RefreshSendsRedirect)
	}
	row("client id", Printable(cc.Client.ID))
	row("client secret", secret(cc.Client.Secret, "CLIENT_SECRET"))
	if !cc.Client.PreviousSecret.IsZero() {
		row("previous secret", secret(cc.Client.PreviousSecret, "CLIENT_SECRET_PREVIOUS")+", tried once when the current one is refused")
	}
	if cc.Access.Set {
		row("callers", cc.Access)
	}
	row("scopes", Printable(cmp.Or(strings.Join(cc.Client.Scopes, " "), "(none)")))
	if cc.Client.RedirectURI != "" {
		row("redirect URI", Printable(cc.Client.RedirectURI))
	}
	if cc.Username != "" {
		row("username", Printable(cc.Username))
	}
	if cc.Grant == sources.Password || !cc.Password.IsZero() {
		row("password", secret(cc.Password, "PASSWORD"))
	}
	if cc.Grant == sources.RefreshToken || !cc.RefreshToken.IsZero() {
		row("refresh token", secret(cc.RefreshToken, "REFRESH_TOKEN"))
	}
	if u := cc.Upstream; u.URL != nil {
		row("proxy", fmt.Sprintf("/v1/proxy/%s/... to %s, answer headers within %s, whole exchange within %s", cc.Name, u.URL, u.HeaderTimeout, u.MaxDuration))
	}
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
