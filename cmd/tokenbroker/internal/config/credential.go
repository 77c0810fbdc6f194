package config

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"golang.org/x/oauth2"

	"github.com/tokenbroker/tokenbroker/api"
	"github.com/tokenbroker/tokenbroker/sources"
)

// cred is one credential's decoded settings and its variables' names.
type cred struct {
	Cred
	name string
	vars map[string]string // field -> variable
}

// v names the variable of a Cred field.
func (c *cred) v(field string) string { return c.vars[field] }

// loadCredential decodes and validates one credential. ok is false when
// any problem was reported for it.
func loadCredential(p *problems, name string, global api.Access) (cc Credential, ok bool) {
	before := len(p.errs)
	c := &cred{name: name, vars: variables(CredentialPrefix(name), &Cred{})}
	cc = Credential{Name: name, Access: global, Sources: decode(p, CredentialPrefix(name), &c.Cred)}
	cc.Provider, cc.Username = strings.ToLower(c.Provider.V), c.Username.V
	cc.RefreshToken, cc.Password = c.RefreshToken.V, c.Password.V
	if a := access(&c.AllowUids, &c.AllowGids); a.Set {
		cc.Access = a
	}
	providerOK := slices.Contains(sources.Providers(), cc.Provider)
	if !providerOK {
		p.errorf(c.v("Provider"), "%s is not a known provider; use one of %s", sources.QuoteValue(c.Provider.V), strings.Join(sources.Providers(), ", "))
	}
	because, grantOK := chooseGrant(p, c, &cc)
	presetOK := false
	if providerOK && grantOK {
		// When the provider does not offer the grant, what the grant would
		// require is beside the point.
		d, err := sources.Preset(cc.Provider, cc.Grant)
		if presetOK, grantOK = err == nil, err == nil; err != nil {
			how := "set GRANT to one it offers, or check PROVIDER"
			if because != "" {
				how = fmt.Sprintf("the grant was chosen because %s; set %s to one the provider offers, or check PROVIDER", because, c.v("Grant"))
			}
			p.errorf(c.v("Grant"), "%v; %s", err, how)
		}
		cc.Dialect = d
	}
	loadDialect(p, c, &cc, presetOK)
	loadClient(p, c, &cc)
	loadTokenFile(p, c, &cc)
	if grantOK {
		checkGrantNeeds(p, c, &cc)
	}
	return cc, len(p.errs) == before
}

// chooseGrant sets the grant, or infers it from what is set and says
// because of what. A refresh token whose file failed still says which
// grant was meant.
func chooseGrant(p *problems, c *cred, cc *Credential) (because string, ok bool) {
	name, hasRefresh := c.v("Grant"), c.RefreshToken.given != ""
	if g := c.Grant.V; g != "" {
		cc.Grant = sources.Grant(strings.ToLower(g))
		switch cc.Grant {
		case sources.ClientCredentials, sources.RefreshToken, sources.Password:
			return "", true
		case sources.AuthorizationCode:
			p.errorf(name, "authorization_code cannot keep a token fresh on its own; set it to refresh_token and run tokenbroker authorize %s once", c.name)
		default:
			p.errorf(name, "%s is not a grant tokenbroker runs; use client_credentials, refresh_token or password", sources.QuoteValue(g))
		}
		return "", false
	}
	switch {
	case hasRefresh && cc.Username != "":
		p.errorf(name, "not set, and both REFRESH_TOKEN and USERNAME are; set it to refresh_token or password")
		return "", false
	case hasRefresh:
		cc.Grant, because = sources.RefreshToken, "REFRESH_TOKEN is set"
	case cc.Username != "":
		cc.Grant, because = sources.Password, "USERNAME is set"
	case c.AuthorizeURL.set() && c.RedirectURI.set():
		// The operator runs authorize; client_credentials would be refused.
		cc.Grant, because = sources.RefreshToken, "AUTHORIZE_URL and REDIRECT_URI are set"
	default:
		cc.Grant, because = sources.ClientCredentials, "no REFRESH_TOKEN, USERNAME or AUTHORIZE_URL is set"
	}
	return because, true
}

// loadDialect applies the generic settings over the preset (over the
// generic dialect when the preset failed, so that they are judged too),
// then reports what sources.Dialect.Validate finds, under the variable
// that set it.
func loadDialect(p *problems, c *cred, cc *Credential, presetOK bool) {
	d := &cc.Dialect
	if !presetOK {
		*d, _ = sources.Preset("generic", sources.ClientCredentials)
	}
	if u, err := url.Parse(c.TokenURL.V); err == nil && u.Scheme == "http" && u.User == nil && !isLoopback(u.Hostname()) {
		p.warnf(c.v("TokenURL"), "http:// to %s sends the client secret and tokens in clear; use https://", u.Hostname())
	}
	d.TokenURL = cmp.Or(c.TokenURL.V, d.TokenURL)
	d.AuthorizeURL = cmp.Or(c.AuthorizeURL.V, d.AuthorizeURL)
	d.Method = cmp.Or(c.Method.V, d.Method)
	d.Params = cmp.Or(sources.Placement(c.Params.V), d.Params)
	sep := string(c.ScopeSeparator.V)
	d.ScopeSeparator = cmp.Or(map[string]string{"space": " ", "comma": ","}[strings.ToLower(sep)], sep, d.ScopeSeparator)
	switch strings.ToLower(c.ClientAuth.V) {
	case "":
	case "basic", "client_secret_basic":
		d.ClientAuth = oauth2.AuthStyleInHeader
	case "params", "client_secret_post", "none":
		d.ClientAuth = oauth2.AuthStyleInParams
	default:
		p.errorf(c.v("ClientAuth"), "%s is not a client authentication method; use client_secret_basic or client_secret_post (also spelt basic or params), or none for a public client", sources.QuoteValue(c.ClientAuth.V))
	}
	loadHeaders(p, c.v("Headers"), c.Headers.V, d)
	if f := c.LifetimeField.V; f != "" {
		others := slices.DeleteFunc(slices.Clone(d.WithDefaults().LifetimeFields), func(x string) bool { return x == f })
		d.LifetimeFields = append([]string{f}, others...)
	}
	for _, tt := range strings.Split(c.TokenTypes.V, ",") {
		if tt = strings.TrimSpace(tt); tt != "" && !slices.ContainsFunc(d.TokenTypes, func(x string) bool { return strings.EqualFold(x, tt) }) {
			d.TokenTypes = append(d.TokenTypes, tt)
		}
	}
	if v := c.RefreshSendsSecret.V; v != "" {
		d.RefreshOmitsSecret = v == "false"
	}
	if v := c.RefreshSendsRedirectURI.V; v != "" {
		d.RefreshSendsRedirect = v == "true"
	}
	for _, k := range [][2]string{{"RefreshSendsSecret", c.RefreshSendsSecret.V}, {"RefreshSendsRedirectURI", c.RefreshSendsRedirectURI.V}} {
		if k[1] != "" && cc.Grant != "" && cc.Grant != sources.RefreshToken {
			p.warnf(c.v(k[0]), "has no effect with the %s grant; it applies to refresh_token", cc.Grant)
		}
	}
	d.DefaultLifetime = cmp.Or(c.DefaultLifetime.V, d.DefaultLifetime)
	for _, err := range d.Validate() {
		var fe *sources.FieldError
		switch {
		case !errors.As(err, &fe):
		case fe.Field == sources.FieldTokenURL && d.TokenURL == "":
			if presetOK { // else the preset's problem is reported already
				p.errorf(c.v("TokenURL"), "required: provider %s has no fixed token endpoint; set it to the server's token URL (https://...)", cc.Provider)
			}
		case fe.Field == sources.FieldLifetimeFields:
			p.errorf(c.v("LifetimeField"), "%s", fe.Problem)
		default:
			p.errorf(c.v(string(fe.Field)), "%s", fe.Problem)
		}
	}
}

// loadHeaders reads "Name: value; Name2: value2" over d's headers (the
// preset's own copy); names and values are Validate's to judge.
func loadHeaders(p *problems, name, s string, d *sources.Dialect) {
	for _, part := range strings.Split(s, ";") {
		if part = strings.TrimSpace(part); part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, ":")
		if k, v = strings.TrimSpace(k), strings.TrimSpace(v); !ok || k == "" || v == "" {
			p.errorf(name, "%s is not \"Name: value\"; separate headers with ;", sources.QuoteValue(part))
			continue
		}
		if d.Headers == nil {
			d.Headers = map[string]string{}
		}
		d.Headers[http.CanonicalHeaderKey(k)] = v
	}
}

// loadClient reads the client's id, scopes and redirect URI.
func loadClient(p *problems, c *cred, cc *Credential) {
	cc.Client = sources.Client{ID: c.ClientID.V, Secret: c.ClientSecret.V, PreviousSecret: c.ClientSecretPrevious.V}
	for _, f := range []struct{ field, v string }{{"ClientID", cc.Client.ID}, {"Username", cc.Username}} {
		if sources.HasControl(f.v) {
			p.errorf(c.v(f.field), "holds a control character; remove it")
		}
	}
	if cc.Client.ID == "" {
		p.errorf(c.v("ClientID"), "required; set it to the client id the provider issued")
	}
	if c.ClientSecretPrevious.given != "" && c.ClientSecret.given == "" {
		p.errorf(c.ClientSecretPrevious.given, "set without %s; the previous secret is only tried after the current one is refused, so set the current one too", c.v("ClientSecret"))
	}
	// RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
	for _, sc := range strings.FieldsFunc(c.Scopes.V, isListSep) {
		if strings.ContainsFunc(sc, func(r rune) bool { return r < 0x21 || r > 0x7e || r == '"' || r == '\\' }) {
			p.errorf(c.v("Scopes"), "scope %s holds a character RFC 6749 does not allow (quote, backslash, or outside printable ASCII); fix it", sources.QuoteValue(sc))
		} else if !slices.Contains(cc.Client.Scopes, sc) {
			cc.Client.Scopes = append(cc.Client.Scopes, sc)
		}
	}
	if s := c.RedirectURI.V; s != "" {
		if u, err := url.Parse(s); err != nil || !u.IsAbs() || u.Host == "" && u.Opaque == "" {
			p.errorf(c.v("RedirectURI"), "%s is not an absolute URI; set the redirect URI registered with the provider", sources.QuoteValue(s))
		} else {
			cc.Client.RedirectURI = s
		}
	}
}

// checkGrantNeeds reports what the grant requires and nobody set, and what
// is set that the grant would ignore. A secret given but failed has been
// reported already.
func checkGrantNeeds(p *problems, c *cred, cc *Credential) {
	g, grantVar, authVar := cc.Grant, c.v("Grant"), c.v("ClientAuth")
	public := strings.EqualFold(c.ClientAuth.V, "none")
	require := func(s *Secret, field, what string) {
		if s.given == "" {
			p.errorf(c.v(field), "required for the %s grant; set it, or %s_FILE to a file holding %s", g, c.v(field), what)
		}
	}
	switch {
	case public && c.ClientSecret.given != "":
		p.errorf(c.ClientSecret.given, "set, but %s=none sends no secret; remove it, or set %s to client_secret_basic or client_secret_post", authVar, authVar)
	case public && g == sources.ClientCredentials:
		p.errorf(authVar, "none: the client_credentials grant needs a confidential client; set the client secret and client_secret_basic or client_secret_post")
	case !public && g != sources.RefreshToken:
		require(&c.ClientSecret, "ClientSecret", "the client secret")
	}
	switch {
	case g == sources.RefreshToken && c.RefreshToken.given == "":
		p.warnf(c.v("RefreshToken"), "not set: the credential has no token until tokenbroker authorize %s stores one (or set it to a refresh token you have)", c.name)
	case g != sources.RefreshToken && c.RefreshToken.ok():
		p.errorf(c.RefreshToken.given, "set, but the %s grant does not use it; remove it, or set %s=refresh_token", g, grantVar)
	}
	if g == sources.Password {
		if cc.Username == "" {
			p.errorf(c.v("Username"), "required for the password grant; set the resource owner's user name")
		}
		require(&c.Password, "Password", "the resource owner's password")
	} else if c.Password.ok() {
		p.errorf(c.Password.given, "set, but the %s grant does not use it; remove it, or set %s for the password grant", g, c.v("Username"))
	}
	if cc.Username != "" && g == sources.ClientCredentials {
		p.errorf(c.v("Username"), "set, but the client_credentials grant does not use it; remove it, or set %s=password", grantVar)
	}
	if g == sources.RefreshToken && cc.Dialect.RefreshSendsRedirect && !c.RedirectURI.set() {
		p.errorf(c.v("RedirectURI"), "required: provider %s sends redirect_uri on every refresh; set the redirect URI the refresh token was issued for", cc.Provider)
	}
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") || strings.HasSuffix(strings.ToLower(host), ".localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
