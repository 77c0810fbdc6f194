package config

import (
	"cmp"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"golang.org/x/oauth2"

	"github.com/tokenbroker/tokenbroker/sources"
)

// clientAuthNone is CLIENT_AUTH=none: a public client sends its id in the
// parameters and no secret.
const clientAuthNone = "none"

// loadDialect applies the generic settings over the preset, then reports
// what sources.Dialect.Validate finds, under the variable that set it.
func loadDialect(p *problems, cv *credVars, cc *Credential, presetOK bool) {
	s, d := &cv.s, &cc.Dialect
	if !presetOK {
		// Judge the knobs over the generic dialect: the preset's problem
		// is reported already.
		*d, _ = sources.Preset("generic", sources.ClientCredentials)
	}
	if s.TokenURL.set() {
		d.TokenURL = s.TokenURL.V
		if u, err := url.Parse(d.TokenURL); err == nil && u.Scheme == "http" && u.User == nil && !isLoopback(u.Hostname()) {
			p.warnf(cv.v("TokenURL"), "http:// to %s sends the client secret and tokens in clear; use https://", u.Hostname())
		}
	} else if presetOK && d.TokenURL == "" {
		p.errorf(cv.v("TokenURL"), "required: provider %s has no fixed token endpoint; set it to the server's token URL (https://...)", cc.Provider)
	}
	d.AuthorizeURL = cmp.Or(s.AuthorizeURL.V, d.AuthorizeURL)
	d.Method = cmp.Or(strings.ToUpper(s.Method.V), d.Method)
	d.Params = sources.Placement(cmp.Or(strings.ToLower(s.Params.V), string(d.Params)))
	loadClientAuth(p, cv, d)
	switch strings.ToLower(s.ScopeSeparator.V) {
	case "":
	case "space", " ":
		d.ScopeSeparator = " "
	case "comma":
		d.ScopeSeparator = ","
	default:
		d.ScopeSeparator = s.ScopeSeparator.V
	}
	loadHeaders(p, cv.v("Headers"), s.Headers.V, d)
	if f := s.LifetimeField.V; f != "" {
		fields := cmpOrSlice(d.LifetimeFields, []string{"expires_in", "token_expires_in"})
		d.LifetimeFields = append([]string{f}, slices.DeleteFunc(slices.Clone(fields), func(x string) bool { return x == f })...)
	}
	for _, tt := range strings.Split(s.TokenTypes.V, ",") {
		if tt = strings.TrimSpace(tt); tt != "" && !slices.ContainsFunc(d.TokenTypes, func(x string) bool { return strings.EqualFold(x, tt) }) {
			d.TokenTypes = append(d.TokenTypes, tt)
		}
	}
	loadRefreshKnobs(p, cv, cc)
	if s.DefaultLifetime.set() {
		d.DefaultLifetime = s.DefaultLifetime.V
	}
	for _, err := range d.Validate() {
		var fe *sources.FieldError
		if errors.As(err, &fe) && !(fe.Field == sources.FieldTokenURL && d.TokenURL == "") {
			p.errorf(cv.v(settingOf(fe.Field)), "%s", fe.Problem)
		}
	}
}

// settingOf is the Cred field that sets a Dialect field.
func settingOf(f sources.Field) string {
	if f == sources.FieldLifetimeFields {
		return "LifetimeField"
	}
	return string(f)
}

// loadClientAuth reads CLIENT_AUTH: the RFC 7591 names, today's words, and
// none for a public client.
func loadClientAuth(p *problems, cv *credVars, d *sources.Dialect) {
	switch v := strings.ToLower(cv.s.ClientAuth.V); v {
	case "":
	case "basic", "client_secret_basic":
		d.ClientAuth = oauth2.AuthStyleInHeader
	case "params", "client_secret_post", clientAuthNone:
		d.ClientAuth = oauth2.AuthStyleInParams
	default:
		p.errorf(cv.v("ClientAuth"), "%s is not a client authentication method; use client_secret_basic or client_secret_post (also spelt basic or params), or none for a public client", show(cv.s.ClientAuth.V))
	}
}

// loadRefreshKnobs applies REFRESH_SENDS_SECRET and _REDIRECT_URI.
func loadRefreshKnobs(p *problems, cv *credVars, cc *Credential) {
	for _, k := range []struct {
		field string
		b     *Switch
		apply func(bool)
	}{
		{"RefreshSendsSecret", &cv.s.RefreshSendsSecret, func(b bool) { cc.Dialect.RefreshOmitsSecret = !b }},
		{"RefreshSendsRedirectURI", &cv.s.RefreshSendsRedirectURI, func(b bool) { cc.Dialect.RefreshSendsRedirect = b }},
	} {
		if !k.b.set() || !k.b.ok {
			continue
		}
		k.apply(k.b.V)
		if cc.Grant != "" && cc.Grant != sources.RefreshToken {
			p.warnf(cv.v(k.field), "has no effect with the %s grant; it applies to refresh_token", cc.Grant)
		}
	}
}

// loadHeaders reads "Name: value; Name2: value2" over d's headers; names
// and values are Validate's to judge.
func loadHeaders(p *problems, name, s string, d *sources.Dialect) {
	if s == "" {
		return
	}
	h := make(map[string]string, len(d.Headers))
	for k, v := range d.Headers {
		h[k] = v
	}
	for _, part := range strings.Split(s, ";") {
		if part = strings.TrimSpace(part); part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, ":")
		if k, v = strings.TrimSpace(k), strings.TrimSpace(v); !ok || k == "" || v == "" {
			p.errorf(name, "%s is not \"Name: value\"; separate headers with ;", show(part))
			continue
		}
		h[http.CanonicalHeaderKey(k)] = v
	}
	d.Headers = h
}

func cmpOrSlice(a, b []string) []string {
	if len(a) > 0 {
		return a
	}
	return b
}
