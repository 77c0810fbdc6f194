package config

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strings"

	"golang.org/x/oauth2"

	"github.com/tokenbroker/tokenbroker/api"
	"github.com/tokenbroker/tokenbroker/sources"
)

// cred is one credential's decoded settings, its name and its prefix.
type cred struct {
	Cred
	name, prefix string
}

// v names the variable of a Cred field.
func (c *cred) v(field string) string {
	return c.prefix + "_" + suffixes[reflect.TypeFor[Cred]()][field]
}

// loadCredential decodes and validates one credential. ok is false when
// any problem was reported for it.
func loadCredential(p *problems, name string, global api.Access) (cc Credential, ok bool) {
	before := len(p.errs)
	c := &cred{name: name, prefix: CredentialPrefix(name)}
	cc = Credential{Name: name, Access: global, Sources: decode(p, c.prefix, &c.Cred)}
	copyValues(&cc, &c.Cred)
	cc.Provider = strings.ToLower(cc.Provider)
	if a := access(&c.AllowUids, &c.AllowGids); a.Set {
		cc.Access = a
	}
	providerOK := slices.Contains(sources.Providers(), cc.Provider)
	if !providerOK {
		p.errorf(c.v("Provider"), "%s is not a known provider; use one of %s", sources.QuoteValue(c.Provider.V), strings.Join(sources.Providers(), ", "))
	}
	because, grantOK := chooseGrant(p, c, &cc)
	d, err := sources.Preset(cc.Provider, cc.Grant)
	if err != nil && providerOK && grantOK {
		// The provider does not offer the grant: what the grant would
		// require is beside the point.
		grantOK = false
		how := fmt.Sprintf("set %s to one it offers, or check PROVIDER", c.v("Grant"))
		if because != "" {
			how = "the grant was chosen because " + because + "; " + how
		}
		p.errorf(c.v("Grant"), "%v; %s", err, how)
	}
	presetOK := err == nil && grantOK
	if !presetOK { // the settings are judged over the generic dialect
		d, _ = sources.Preset("generic", sources.ClientCredentials)
	}
	cc.Dialect = d
	loadDialect(p, c, &cc, presetOK)
	loadClient(p, c, &cc)
	loadTokenFile(p, c, &cc)
	if grantOK {
		checkGrantNeeds(p, c, &cc)
	}
	loadUpstream(p, c, &cc)
	return cc, len(p.errs) == before
}

// loadUpstream reads the proxy's settings; api.ParseUpstream holds the
// rule for the URL.
func loadUpstream(p *problems, c *cred, cc *Credential) {
	if !c.Upstream.set() {
		return
	}
	u, err := api.ParseUpstream(c.Upstream.V)
	if err != nil {
		p.errorf(c.v("Upstream"), "%s %v; set it to the API's origin, e.g. https://api.example.com or https://api.example.com/v2", sources.QuoteValue(c.Upstream.V), err)
		return
	}
	cc.Upstream = api.Upstream{URL: u, HeaderTimeout: c.UpstreamTimeout.V, MaxDuration: c.UpstreamMaxDuration.V}
}

// chooseGrant sets the grant, or infers it from what is set and says
// because of what. A refresh token whose file failed still says which
// grant was meant.
func chooseGrant(p *problems, c *cred, cc *Credential) (because string, ok bool) {
	name, refresh, user := c.v("Grant"), c.RefreshToken.given != "", cc.Username != ""
	if g := c.Grant.V; g != "" {
		switch cc.Grant = sources.Grant(strings.ToLower(g)); cc.Grant {
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
	case refresh && user:
		p.errorf(name, "not set, and both REFRESH_TOKEN and USERNAME are; set it to refresh_token or password")
		return "", false
	case refresh:
		cc.Grant, because = sources.RefreshToken, "REFRESH_TOKEN is set"
	case user:
		cc.Grant, because = sources.Password, "USERNAME is set"
	case c.AuthorizeURL.set() && c.RedirectURI.set(): // for authorize: client_credentials would be refused
		cc.Grant, because = sources.RefreshToken, "AUTHORIZE_URL and REDIRECT_URI are set"
	default:
		cc.Grant, because = sources.ClientCredentials, "no REFRESH_TOKEN, USERNAME or AUTHORIZE_URL is set"
	}
	return because, true
}

// loadDialect applies the credential's settings over the preset, then
// reports what sources.Dialect.Validate finds under the variable that set
// it.
func loadDialect(p *problems, c *cred, cc *Credential, presetOK bool) {
	d := &cc.Dialect
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
		d.LifetimeFields = append([]string{f}, slices.DeleteFunc(slices.Clone(d.WithDefaults().LifetimeFields), func(x string) bool { return x == f })...)
	}
	for _, tt := range strings.FieldsFunc(c.TokenTypes.V, isListSep) {
		if !slices.ContainsFunc(d.TokenTypes, func(x string) bool { return strings.EqualFold(x, tt) }) {
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

// loadClient reads the client's id, secrets, scopes and redirect URI.
func loadClient(p *problems, c *cred, cc *Credential) {
	cc.Client = sources.Client{ID: c.ClientID.V, Secret: c.ClientSecret.V, PreviousSecret: c.ClientSecretPrevious.V, RedirectURI: c.RedirectURI.V}
	if !c.ClientID.set() {
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
	if u, err := url.Parse(c.RedirectURI.V); c.RedirectURI.set() && (err != nil || !u.IsAbs() || u.Host == "" && u.Opaque == "") {
		p.errorf(c.v("RedirectURI"), "%s is not an absolute URI; set the redirect URI registered with the provider", sources.QuoteValue(c.RedirectURI.V))
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
	unused := func(name, instead string) {
		p.errorf(name, "set, but the %s grant does not use it; remove it, or set %s", g, instead)
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
		unused(c.RefreshToken.given, grantVar+"=refresh_token")
	}
	if g == sources.Password {
		if cc.Username == "" {
			p.errorf(c.v("Username"), "required for the password grant; set the resource owner's user name")
		}
		require(&c.Password, "Password", "the resource owner's password")
	} else if c.Password.ok() {
		unused(c.Password.given, c.v("Username")+" for the password grant")
	}
	if cc.Username != "" && g == sources.ClientCredentials {
		unused(c.v("Username"), grantVar+"=password")
	}
	if g == sources.RefreshToken && cc.Dialect.RefreshSendsRedirect && !c.RedirectURI.set() {
		p.errorf(c.v("RedirectURI"), "required: provider %s sends redirect_uri on every refresh; set the redirect URI the refresh token was issued for", cc.Provider)
	}
}

func isLoopback(host string) bool {
	if h := strings.ToLower(host); h == "localhost" || strings.HasSuffix(h, ".localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
