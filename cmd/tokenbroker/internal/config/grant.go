package config

import (
	"fmt"

	"github.com/tokenbroker/tokenbroker/sources"
)

// checkGrantNeeds reports what the grant requires and nobody set, and what
// is set that the grant would ignore.
func checkGrantNeeds(p *problems, cv *credVars, cc *Credential, sec credSecrets) {
	g, grantVar := cc.Grant, cv.v("Grant")
	public := cv.s.ClientAuth.V == clientAuthNone
	switch {
	case public && sec.client.set:
		p.errorf(sec.client.variable, "set, but %s=none sends no secret; remove it, or set %s to client_secret_basic or client_secret_post", cv.v("ClientAuth"), cv.v("ClientAuth"))
	case public && g == sources.ClientCredentials:
		p.errorf(cv.v("ClientAuth"), "none: the client_credentials grant needs a confidential client; set the client secret and client_secret_basic or client_secret_post")
	case !public && (g == sources.ClientCredentials || g == sources.Password):
		require(p, sec.client, cv.v("ClientSecret"), fmt.Sprintf("the %s grant", g), "the client secret")
	}
	if g == sources.RefreshToken && !sec.refresh.set {
		p.warnf(cv.v("RefreshToken"), "not set: the credential has no token until tokenbroker authorize %s stores one (or set it to a refresh token you have)", cv.name)
	}
	if g == sources.Password {
		if cc.Username == "" {
			p.errorf(cv.v("Username"), "required for the password grant; set the resource owner's user name")
		}
		require(p, sec.password, cv.v("Password"), "the password grant", "the resource owner's password")
	}
	if sec.refresh.set && !sec.refresh.failed && g != sources.RefreshToken {
		p.errorf(sec.refresh.variable, "set, but the %s grant does not use it; remove it, or set %s=refresh_token", g, grantVar)
	}
	if sec.password.set && !sec.password.failed && g != sources.Password {
		p.errorf(sec.password.variable, "set, but the %s grant does not use it; remove it, or set %s for the password grant", g, cv.v("Username"))
	}
	if cc.Username != "" && g == sources.ClientCredentials {
		p.errorf(cv.v("Username"), "set, but the client_credentials grant does not use it; remove it, or set %s=password", grantVar)
	}
	if g == sources.RefreshToken && cc.Dialect.RefreshSendsRedirect && !cv.s.RedirectURI.set() {
		p.errorf(cv.v("RedirectURI"), "required: provider %s sends redirect_uri on every refresh; set the redirect URI the refresh token was issued for", cc.Provider)
	}
}

// require reports a secret the grant needs and nobody set. One that was
// set but failed has been reported already.
func require(p *problems, s secret, name, grant, what string) {
	if !s.set {
		p.errorf(name, "required for %s; set it, or %s_FILE to a file holding %s", grant, name, what)
	}
}
