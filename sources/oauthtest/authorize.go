package oauthtest

import (
	"net/http"
	"net/url"
	"slices"
	"strings"
)

// DenyAuthorization makes the authorization endpoint answer access_denied,
// as when the user clicks "deny".
func (p *Provider) DenyAuthorization(deny bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.denyAuthorization = deny
}

// serveAuthorize is the authorization endpoint (RFC 6749 4.1.1). There is no
// user to ask: every valid request is approved at once and redirected back
// with a code (and the state), the way each dialect redirects.
func (p *Provider) serveAuthorize(w http.ResponseWriter, r *http.Request, d Dialect, sp *spec) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		write(w, fail("invalid_request", "the authorization endpoint takes GET").with(http.StatusMethodNotAllowed).reply())
		return
	}
	q := r.URL.Query()
	p.mu.Lock()
	defer p.mu.Unlock()

	// Errors about the client or redirect_uri must not redirect (4.1.2.1).
	c, ok := p.clients[q.Get("client_id")]
	if !ok || c.Dialect != d {
		write(w, fail("invalid_request", "unknown client").reply())
		return
	}
	redirect := q.Get("redirect_uri")
	if redirect == "" {
		redirect = c.RedirectURI
	}
	back, err := url.Parse(redirect)
	if redirect == "" || redirect != c.RedirectURI || err != nil {
		write(w, fail("invalid_request", "redirect_uri does not match the registered one").reply())
		return
	}
	send := func(v url.Values) {
		if st := q.Get("state"); st != "" {
			v.Set("state", st)
		}
		bq := back.Query()
		for k, vs := range v {
			bq[k] = vs
		}
		back.RawQuery = bq.Encode()
		http.Redirect(w, r, back.String(), sp.redirectStatus)
	}
	deny := func(code, desc string) { send(url.Values{"error": {code}, "error_description": {desc}}) }

	if p.denyAuthorization {
		deny("access_denied", "the resource owner denied the request")
		return
	}
	if q.Get("response_type") != "code" {
		deny("unsupported_response_type", "response_type must be code")
		return
	}
	var scopes []string
	switch s := q.Get("scope"); {
	case sp.fixedScope != "":
		if s != sp.fixedScope {
			deny("invalid_scope", "scope must be "+sp.fixedScope)
			return
		}
		scopes = []string{s}
	case s == "":
		if sp.authorizeNeedsScope {
			deny("invalid_scope", "missing scope")
			return
		}
		scopes = slices.Clone(c.Scopes)
	default:
		scopes = strings.Split(s, sp.sep)
		for _, sc := range scopes {
			if !slices.Contains(c.Scopes, sc) {
				deny("invalid_scope", "scope "+sc+" is not allowed (the separator is "+sp.sep+")")
				return
			}
		}
	}
	cd := &code{client: c.ID, redirectURI: q.Get("redirect_uri"), scopes: scopes, challenge: q.Get("code_challenge")}
	if cd.challenge != "" {
		cd.method = q.Get("code_challenge_method")
		switch cd.method {
		case "":
			cd.method = "plain"
		case "plain", "S256":
		default:
			deny("invalid_request", "code_challenge_method must be S256 or plain")
			return
		}
	}
	send(url.Values{"code": {p.newCode(cd)}})
}
