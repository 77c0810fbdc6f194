package config

import (
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"

	"github.com/tokenbroker/tokenbroker/api"
	"github.com/tokenbroker/tokenbroker/sources"
)

// credVars is one credential's decoded settings and its variables' names.
type credVars struct {
	name string
	s    Cred
	vars map[string]string // field name -> variable
}

// v names the variable of a Cred field.
func (cv *credVars) v(field string) string { return cv.vars[field] }

// credSecrets are a credential's secrets as read.
type credSecrets struct{ client, previous, refresh, password secret }

var keepGrants = []sources.Grant{sources.ClientCredentials, sources.RefreshToken, sources.Password}

// loadCredential decodes and validates one credential. ok is false when
// any problem was reported for it.
func loadCredential(p *problems, name string, global api.Access) (cc Credential, ok bool) {
	before := len(p.errs)
	cv := &credVars{name: name, vars: variables(CredentialPrefix(name), &Cred{})}
	decode(p, CredentialPrefix(name), &cv.s)
	cc = Credential{Name: name, Provider: strings.ToLower(cv.s.Provider.V), Username: cv.s.Username.V, Sources: map[string]string{}}
	providerOK := slices.Contains(sources.Providers(), cc.Provider)
	if !providerOK {
		p.errorf(cv.v("Provider"), "%s is not a known provider; use one of %s", show(cv.s.Provider.V), strings.Join(sources.Providers(), ", "))
	}
	sec := readCredSecrets(p, cv, &cc)
	if hasControl(cc.Username) {
		p.errorf(cv.v("Username"), "holds a control character; remove it")
	}
	grantOK := chooseGrant(p, cv, &cc, sec.refresh.set)
	presetOK := false
	if providerOK && grantOK {
		presetOK, grantOK = loadPreset(p, cv, &cc)
	}
	loadDialect(p, cv, &cc, presetOK)
	loadClient(p, cv, &cc, sec)
	if grantOK {
		checkGrantNeeds(p, cv, &cc, sec)
	}
	cc.Access = global
	if a := access(&cv.s.AllowUids, &cv.s.AllowGids); a.Set {
		cc.Access = a
	}
	return cc, len(p.errs) == before
}

// readCredSecrets reads the four secrets and says where each came from.
func readCredSecrets(p *problems, cv *credVars, cc *Credential) credSecrets {
	s := &cv.s
	sec := credSecrets{
		client:   readSecret(p, cv.v("ClientSecret"), &s.ClientSecret, s.ClientSecretFile.V),
		previous: readSecret(p, cv.v("ClientSecretPrevious"), &s.ClientSecretPrevious, s.ClientSecretPreviousFile.V),
		refresh:  readSecret(p, cv.v("RefreshToken"), &s.RefreshToken, s.RefreshTokenFile.V),
		password: readSecret(p, cv.v("Password"), &s.Password, s.PasswordFile.V),
	}
	if sec.previous.set && !sec.client.set {
		p.errorf(sec.previous.variable, "set without %s; the previous secret is only tried after the current one is refused, so set the current one too", cv.v("ClientSecret"))
	}
	for setting, r := range map[string]secret{"CLIENT_SECRET": sec.client, "CLIENT_SECRET_PREVIOUS": sec.previous,
		"REFRESH_TOKEN": sec.refresh, "PASSWORD": sec.password} {
		if r.set && !r.failed {
			cc.Sources[setting] = r.from
		}
	}
	cc.Client.Secret, cc.Client.PreviousSecret = sec.client.value, sec.previous.value
	cc.RefreshToken, cc.Password = sec.refresh.value, sec.password.value
	return sec
}

// chooseGrant sets the grant, or infers it from what is set. A refresh
// token whose file failed still says which grant was meant.
func chooseGrant(p *problems, cv *credVars, cc *Credential, hasRefresh bool) bool {
	name := cv.v("Grant")
	if g := cv.s.Grant.V; g != "" {
		cc.Grant = sources.Grant(strings.ToLower(g))
		switch {
		case cc.Grant == sources.AuthorizationCode:
			p.errorf(name, "authorization_code cannot keep a token fresh on its own; set it to refresh_token and run tokenbroker authorize %s once", cv.name)
		case !slices.Contains(keepGrants, cc.Grant):
			p.errorf(name, "%s is not a grant tokenbroker runs; use client_credentials, refresh_token or password", show(g))
		default:
			return true
		}
		return false
	}
	switch {
	case hasRefresh && cc.Username != "":
		p.errorf(name, "not set, and both REFRESH_TOKEN and USERNAME are; set it to refresh_token or password")
		return false
	case hasRefresh:
		cc.Grant = sources.RefreshToken
	case cc.Username != "":
		cc.Grant = sources.Password
	case cv.s.AuthorizeURL.set() && cv.s.RedirectURI.set():
		// An authorization endpoint and a redirect URI mean the operator
		// runs authorize; client_credentials would be refused later.
		cc.Grant = sources.RefreshToken
	default:
		cc.Grant = sources.ClientCredentials
	}
	return true
}

// inferredBecause says why an unset GRANT became cc.Grant.
func inferredBecause(cv *credVars, g sources.Grant) string {
	switch {
	case g == sources.RefreshToken && !cv.s.RefreshToken.set() && cv.s.RefreshTokenFile.V == "":
		return "AUTHORIZE_URL and REDIRECT_URI are set"
	case g == sources.RefreshToken:
		return "REFRESH_TOKEN is set"
	case g == sources.Password:
		return "USERNAME is set"
	}
	return "no REFRESH_TOKEN, USERNAME or AUTHORIZE_URL is set"
}

// loadPreset starts the dialect from the provider's preset for the grant.
func loadPreset(p *problems, cv *credVars, cc *Credential) (presetOK, grantOK bool) {
	d, err := sources.Preset(cc.Provider, cc.Grant)
	if err != nil {
		how := "set GRANT to one it offers, or check PROVIDER"
		if !cv.s.Grant.set() {
			how = fmt.Sprintf("the grant was chosen because %s; set %s to one the provider offers, or check PROVIDER", inferredBecause(cv, cc.Grant), cv.v("Grant"))
		}
		p.errorf(cv.v("Grant"), "%v; %s", err, how)
		return false, false // what the grant would require is beside the point
	}
	cc.Dialect = d
	return true, true
}

// loadClient reads the client's id, scopes and redirect URI.
func loadClient(p *problems, cv *credVars, cc *Credential, sec credSecrets) {
	cc.Client.ID = cv.s.ClientID.V
	switch {
	case cc.Client.ID == "":
		p.errorf(cv.v("ClientID"), "required; set it to the client id the provider issued")
	case hasControl(cc.Client.ID):
		p.errorf(cv.v("ClientID"), "holds a control character; remove it")
	}
	cc.Client.Scopes = parseScopes(p, cv.v("Scopes"), cv.s.Scopes.V)
	if s := cv.s.RedirectURI.V; s != "" {
		if u, err := url.Parse(s); err != nil || !u.IsAbs() || u.Host == "" && u.Opaque == "" {
			p.errorf(cv.v("RedirectURI"), "%s is not an absolute URI; set the redirect URI registered with the provider", show(s))
		} else {
			cc.Client.RedirectURI = s
		}
	}
}

// parseScopes splits on commas and blanks, drops duplicates and checks each
// against RFC 6749 §3.3 (scope-token = 1*( %x21 / %x23-5B / %x5D-7E )).
func parseScopes(p *problems, name, s string) []string {
	var scopes []string
	for _, sc := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || unicodeSpace(r) }) {
		if strings.ContainsFunc(sc, func(r rune) bool { return r < 0x21 || r > 0x7e || r == '"' || r == '\\' }) {
			p.errorf(name, "scope %s holds a character RFC 6749 does not allow (quote, backslash, or outside printable ASCII); fix it", show(sc))
		} else if !slices.Contains(scopes, sc) {
			scopes = append(scopes, sc)
		}
	}
	return scopes
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") || strings.HasSuffix(strings.ToLower(host), ".localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
