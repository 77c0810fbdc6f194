package oauthtest

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// maxBody bounds the request body read.
const maxBody = 1 << 20

// reply is an answer before it is written, so that a Fault can replace or
// amend it.
type reply struct {
	status    int
	header    http.Header
	body      map[string]any
	lifetime  string // the lifetime field of a token answer
	challenge bool   // invalid_client after an HTTP Basic attempt
}

// oauthError is an RFC 6749 5.2 error answer.
type oauthError struct {
	status    int
	code      string
	desc      string
	challenge bool
}

func fail(code, format string, args ...any) *oauthError {
	status := http.StatusBadRequest
	if code == "invalid_client" {
		status = http.StatusUnauthorized
	}
	return &oauthError{status: status, code: code, desc: fmt.Sprintf(format, args...)}
}

func (e *oauthError) reply() reply {
	return reply{
		status:    e.status,
		body:      map[string]any{"error": e.code, "error_description": e.desc},
		challenge: e.challenge,
	}
}

// ServeHTTP routes a request to the token or authorization endpoint of its
// dialect.
func (p *Provider) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	for d, sp := range specs {
		switch r.URL.Path {
		case sp.tokenPath:
			p.serveToken(w, r, d, sp)
			return
		case sp.authorizePath:
			p.serveAuthorize(w, r, d, sp)
			return
		}
	}
	write(w, fail("invalid_request", "no endpoint at %s", r.URL.Path).with(http.StatusNotFound).reply())
}

func (e *oauthError) with(status int) *oauthError { e.status = status; return e }

func (p *Provider) serveToken(w http.ResponseWriter, r *http.Request, d Dialect, sp *spec) {
	if r.Method != sp.method {
		w.Header().Set("Allow", sp.method)
		write(w, fail("invalid_request", "the %s token endpoint takes %s, not %s", d, sp.method, r.Method).
			with(http.StatusMethodNotAllowed).reply())
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		write(w, fail("invalid_request", "reading the body: %v", err).reply())
		return
	}
	clientID, grant := peek(r, body, "client_id"), peek(r, body, "grant_type")
	if clientID == "" {
		if u, _, ok := r.BasicAuth(); ok {
			clientID = unescape(u)
		}
	}
	p.mu.Lock()
	p.stats.TokenRequests++
	p.stats.ByGrant[grant]++
	p.stats.ByClient[clientID]++
	f := p.takeFault(d, clientID)
	p.mu.Unlock()

	handle := func() reply {
		rep := p.exchange(r, d, sp, body)
		if rep.status >= 400 {
			p.mu.Lock()
			p.stats.Rejected++
			p.mu.Unlock()
		}
		return rep
	}
	if f == nil {
		write(w, handle())
		return
	}
	p.applyFault(w, r, f, handle)
}

// peek finds a parameter in the query or a form body, wherever the dialect
// wants it, for counting and fault matching only.
func peek(r *http.Request, body []byte, name string) string {
	if v := r.URL.Query().Get(name); v != "" {
		return v
	}
	b, _ := url.ParseQuery(string(body))
	return b.Get(name)
}

// exchange runs one token request.
func (p *Provider) exchange(r *http.Request, d Dialect, sp *spec, body []byte) reply {
	if sp.accept != "" && !accepts(r.Header.Values("Accept"), sp.accept) {
		return fail("invalid_request", "the Accept header must list %s", sp.accept).with(http.StatusNotAcceptable).reply()
	}
	params, err := sp.read(r, body)
	if err != nil {
		return err.reply()
	}
	g := params.Get("grant_type")
	if g == "" {
		return fail("invalid_request", "missing grant_type").reply()
	}
	if !slices.Contains(sp.grants, g) {
		return fail("unsupported_grant_type", "%s does not offer the %s grant", d, g).reply()
	}

	p.mu.Lock()
	defer p.mu.Unlock()
	c, err := p.authenticate(r, d, sp, g, params)
	if err != nil {
		return err.reply()
	}
	x := &grantRequest{d: d, sp: sp, c: c, grant: g, params: params, now: p.opts.Now()}
	var t *issued
	switch g {
	case grantClientCredentials:
		t, err = p.clientCredentials(x)
	case grantRefreshToken:
		t, err = p.refreshGrant(x)
	case grantAuthorizationCode:
		t, err = p.codeGrant(x)
	case grantPassword:
		t, err = p.passwordGrant(x)
	}
	if err != nil {
		return err.reply()
	}
	return p.answer(x, t)
}

// read collects the request parameters from where the dialect wants them.
func (sp *spec) read(r *http.Request, body []byte) (url.Values, *oauthError) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, fail("invalid_request", "malformed query string")
	}
	form := func() (url.Values, *oauthError) {
		if len(body) == 0 {
			return url.Values{}, nil
		}
		if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/x-www-form-urlencoded" {
			return nil, fail("invalid_request", "the body must be application/x-www-form-urlencoded")
		}
		b, err := url.ParseQuery(string(body))
		if err != nil {
			return nil, fail("invalid_request", "malformed form body")
		}
		return b, nil
	}
	var params url.Values
	switch sp.params {
	case inQuery:
		params = q
	case inBody:
		if len(q) > 0 {
			return nil, fail("invalid_request", "parameters belong in the form body, not in the URL")
		}
		b, err := form()
		if err != nil {
			return nil, err
		}
		params = b
	case inEither:
		b, err := form()
		if err != nil {
			return nil, err
		}
		params = q
		for k, vs := range b {
			params[k] = append(params[k], vs...)
		}
	case fireworkSplit:
		if q.Has("grant_type") {
			if q.Get("grant_type") == grantClientCredentials {
				return nil, fail("invalid_request", "client_credentials parameters belong in the form body")
			}
			params = q
			break
		}
		b, err := form()
		if err != nil {
			return nil, err
		}
		if g := b.Get("grant_type"); g == grantAuthorizationCode || g == grantRefreshToken {
			return nil, fail("invalid_request", "%s parameters belong in the query string", g)
		}
		if len(q) > 0 {
			return nil, fail("invalid_request", "client_credentials parameters belong in the form body, not in the URL")
		}
		params = b
	}
	for k, vs := range params {
		if len(vs) > 1 {
			return nil, fail("invalid_request", "parameter %s sent more than once", k)
		}
	}
	return params, nil
}

// accepts reports whether an Accept header lists media type want.
func accepts(header []string, want string) bool {
	for _, h := range header {
		for part := range strings.SplitSeq(h, ",") {
			if mt, _, err := mime.ParseMediaType(strings.TrimSpace(part)); err == nil && mt == want {
				return true
			}
		}
	}
	return false
}

// authenticate identifies and authenticates the client. p.mu must be held.
func (p *Provider) authenticate(r *http.Request, d Dialect, sp *spec, g string, params url.Values) (Client, *oauthError) {
	id, secret, hasSecret := params.Get("client_id"), params.Get("client_secret"), params.Has("client_secret")
	var secrets []string
	bu, bp, basic := r.BasicAuth()
	basic = basic && sp.basic
	if basic {
		if hasSecret {
			return Client{}, fail("invalid_request", "client authenticated twice: HTTP Basic and client_secret")
		}
		if id != "" && id != bu && id != unescape(bu) {
			return Client{}, fail("invalid_request", "client_id differs from the HTTP Basic user")
		}
		// RFC 6749 2.3.1 form-encodes both before Basic; Ingest's document
		// does not. Accept either.
		id, secrets = unescape(bu), []string{unescape(bp), bp}
		if _, ok := p.clients[id]; !ok {
			id = bu
		}
	} else if hasSecret {
		secrets = []string{secret}
	}
	deny := func(format string, args ...any) (Client, *oauthError) {
		e := fail("invalid_client", format, args...)
		e.challenge = basic
		return Client{}, e
	}
	if id == "" {
		return deny("no client_id")
	}
	c, ok := p.clients[id]
	if !ok {
		return deny("unknown client %q", id)
	}
	if c.Dialect != d {
		return deny("client %q is registered with %s, not %s", id, c.Dialect, d)
	}
	if g == grantRefreshToken && sp.refreshWithoutSecret {
		return c, nil // Firework: a refresh is authenticated by client_id alone
	}
	if secrets == nil {
		if c.Secret != "" {
			return deny("no client secret")
		}
		return c, nil
	}
	for _, s := range secrets {
		for _, want := range append([]string{c.Secret}, c.OtherSecrets...) {
			if subtle.ConstantTimeCompare([]byte(s), []byte(want)) == 1 {
				return c, nil
			}
		}
	}
	return deny("wrong client secret for %q", id)
}

func unescape(s string) string {
	if u, err := url.QueryUnescape(s); err == nil {
		return u
	}
	return s
}

// grantRequest is one authenticated token request.
type grantRequest struct {
	d      Dialect
	sp     *spec
	c      Client
	grant  string
	params url.Values
	now    time.Time
}

// issued is what a grant produced.
type issued struct {
	access  string
	refresh *refreshToken // nil: the answer carries no refresh token
	scopes  []string
}

// scope parses the request's scope parameter and checks it against allowed.
func (x *grantRequest) scope(allowed []string) ([]string, *oauthError) {
	s := x.params.Get("scope")
	if s == "" {
		return nil, nil
	}
	scopes := strings.Split(s, x.sp.sep)
	for _, sc := range scopes {
		if sc == "" {
			return nil, fail("invalid_scope", "empty scope in %q (the separator is %q)", s, x.sp.sep)
		}
		if !slices.Contains(allowed, sc) {
			return nil, fail("invalid_scope", "scope %q is not granted (allowed: %s; the separator is %q)",
				sc, strings.Join(allowed, x.sp.sep), x.sp.sep)
		}
	}
	return scopes, nil
}

// checkRedirect applies the dialect's redirect_uri rule for code and refresh grants.
func (x *grantRequest) checkRedirect() *oauthError {
	ru, sent := x.params.Get("redirect_uri"), x.params.Has("redirect_uri")
	switch {
	case !sent && x.sp.redirectRequired:
		return fail("invalid_request", "missing redirect_uri")
	case sent && x.sp.redirectChecked && ru != x.c.RedirectURI:
		return fail("invalid_grant", "redirect_uri does not match the registered one")
	}
	return nil
}

func (p *Provider) clientCredentials(x *grantRequest) (*issued, *oauthError) {
	scopes, err := x.scope(x.c.Scopes)
	if err != nil {
		return nil, err
	}
	if scopes == nil {
		if x.sp.ccNeedsScope {
			return nil, fail("invalid_request", "missing scope")
		}
		scopes = slices.Clone(x.c.Scopes)
	}
	if ru := x.params.Get("redirect_uri"); x.params.Has("redirect_uri") && x.sp.redirectChecked && ru != x.c.RedirectURI {
		return nil, fail("invalid_request", "redirect_uri does not match the registered one")
	}
	fam := &family{client: x.c.ID, subject: x.c.ID, scopes: scopes}
	return &issued{access: p.newAccess(x, fam, scopes), scopes: scopes}, nil
}

func (p *Provider) passwordGrant(x *grantRequest) (*issued, *oauthError) {
	user, pass := x.params.Get("username"), x.params.Get("password")
	if user == "" || !x.params.Has("password") {
		return nil, fail("invalid_request", "missing username or password")
	}
	want, ok := p.users[user]
	if !ok || subtle.ConstantTimeCompare([]byte(pass), []byte(want)) != 1 {
		return nil, fail("invalid_grant", "wrong username or password")
	}
	scopes, err := x.scope(x.c.Scopes)
	if err != nil {
		return nil, err
	}
	if scopes == nil {
		scopes = slices.Clone(x.c.Scopes)
	}
	fam := &family{client: x.c.ID, subject: user, scopes: scopes}
	return &issued{access: p.newAccess(x, fam, scopes), refresh: p.newRefresh(fam, x.sp, x.now), scopes: scopes}, nil
}

func (p *Provider) codeGrant(x *grantRequest) (*issued, *oauthError) {
	v := x.params.Get("code")
	if v == "" {
		return nil, fail("invalid_request", "missing code")
	}
	if err := x.checkRedirect(); err != nil {
		return nil, err
	}
	c := p.codes[v]
	switch {
	case c == nil || c.client != x.c.ID:
		return nil, fail("invalid_grant", "unknown authorization code")
	case c.fam != nil:
		// RFC 6749 4.1.2: a replayed code revokes what it issued.
		c.fam.revoked = true
		return nil, fail("invalid_grant", "authorization code already used")
	case !x.now.Before(c.expires):
		return nil, fail("invalid_grant", "authorization code expired")
	case c.redirectURI != "" && x.params.Get("redirect_uri") != c.redirectURI:
		return nil, fail("invalid_grant", "redirect_uri does not match the authorization request")
	}
	if c.challenge != "" && !verifyPKCE(c.challenge, c.method, x.params.Get("code_verifier")) {
		return nil, fail("invalid_grant", "code_verifier does not match the code_challenge")
	}
	scopes := c.scopes
	if x.sp.narrowOnCode {
		s, err := x.scope(c.scopes)
		if err != nil {
			return nil, err
		}
		if s != nil {
			scopes = s
		}
	}
	c.fam = &family{client: x.c.ID, subject: newUUID(), scopes: c.scopes}
	return &issued{access: p.newAccess(x, c.fam, scopes), refresh: p.newRefresh(c.fam, x.sp, x.now), scopes: scopes}, nil
}

func verifyPKCE(challenge, method, verifier string) bool {
	if verifier == "" {
		return false
	}
	if method == "S256" {
		sum := sha256.Sum256([]byte(verifier))
		verifier = base64.RawURLEncoding.EncodeToString(sum[:])
	}
	return subtle.ConstantTimeCompare([]byte(verifier), []byte(challenge)) == 1
}

func (p *Provider) refreshGrant(x *grantRequest) (*issued, *oauthError) {
	v := x.params.Get("refresh_token")
	if v == "" {
		return nil, fail("invalid_request", "missing refresh_token")
	}
	if err := x.checkRedirect(); err != nil {
		return nil, err
	}
	rt := p.refresh[v]
	if rt != nil {
		rt.presented = true
	}
	switch {
	case rt == nil || rt.fam.client != x.c.ID:
		return nil, fail("invalid_grant", "unknown refresh token")
	case rt.fam.revoked:
		return nil, fail("invalid_grant", "refresh token revoked")
	case rt.spent:
		// Reuse of a rotated token: someone holds a copy. Revoke the grant.
		rt.fam.revoked = true
		p.stats.ReuseEvents++
		p.reuses = append(p.reuses, reuse{rt: rt, at: x.now})
		return nil, fail("invalid_grant", "refresh token already used; the grant is revoked")
	case !rt.expires.IsZero() && !x.now.Before(rt.expires):
		return nil, fail("invalid_grant", "refresh token expired")
	}
	scopes := rt.fam.scopes
	if x.sp.narrowOnRefresh {
		s, err := x.scope(rt.fam.scopes)
		if err != nil {
			return nil, err
		}
		if s != nil {
			scopes = s
		}
	}
	t := &issued{access: p.newAccess(x, rt.fam, scopes), scopes: scopes}
	switch {
	case p.opts.Rotate:
		rt.spent, rt.spentAt = true, x.now
		t.refresh = p.newRefresh(rt.fam, x.sp, x.now)
		rt.successor = t.refresh
	case x.sp.repeatRefresh:
		t.refresh = rt
	}
	p.stats.Refreshes++
	return t, nil
}

// newAccess issues an access token in fam. p.mu must be held.
func (p *Provider) newAccess(x *grantRequest, fam *family, scopes []string) string {
	exp := x.now.Add(p.opts.AccessLifetime)
	claims := map[string]any{"iat": x.now.Unix(), "exp": exp.Unix(), "jti": rand.Text()}
	var tok string
	switch {
	case x.d == Firework && x.grant == grantClientCredentials:
		claims["scope"] = strings.Join(scopes, " ")
		claims["bid"] = x.c.ID
		tok = p.jwt(claims)
	case x.d == Firework:
		claims["scope"] = "openid"
		claims["sub"] = fam.subject
		tok = p.jwt(claims)
	case x.d == Ingest:
		claims["sub"] = fam.subject
		claims["scope"] = strings.Join(scopes, ",")
		claims["client_id"] = x.c.ID
		tok = p.jwt(claims)
	default:
		tok = "at_" + rand.Text() + rand.Text()
	}
	p.access[tok] = &accessToken{fam: fam, expires: exp}
	p.stats.Issued++
	return tok
}

// jwt signs claims as an HS256 JWS with the provider's throwaway key.
func (p *Provider) jwt(claims map[string]any) string {
	payload, _ := json.Marshal(claims)
	s := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`)) + "." +
		base64.RawURLEncoding.EncodeToString(payload)
	m := hmac.New(sha256.New, p.key)
	m.Write([]byte(s))
	return s + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// answer shapes a successful token answer the way the dialect does.
func (p *Provider) answer(x *grantRequest, t *issued) reply {
	secs := int64(p.opts.AccessLifetime / time.Second)
	b := map[string]any{"access_token": t.access}
	rep := reply{status: http.StatusOK, body: b, lifetime: "expires_in"}
	if t.refresh != nil {
		b["refresh_token"] = t.refresh.value
	}
	switch x.d {
	case Firework:
		if x.grant == grantClientCredentials {
			b["expires_in"] = secs
			break
		}
		rep.lifetime = "token_expires_in"
		b["token_expires_in"] = secs
		b["token_type"] = "bearer"
		b["scope"] = "openid"
		b["created_at"] = x.now.UTC().Format(time.RFC3339)
		if t.refresh != nil && !t.refresh.expires.IsZero() {
			b["refresh_token_expires_in"] = int64(t.refresh.expires.Sub(x.now) / time.Second)
		}
	case Livepush:
		b["token_type"] = "access_token"
		b["expires_in"] = secs
	case Ingest:
		b["token_type"] = "Bearer"
		b["expires_in"] = strconv.FormatInt(secs, 10)
		b["scope"] = strings.Join(t.scopes, ",")
	case VSRS:
		b["token_type"] = "Bearer"
		b["expires_in"] = secs
	default:
		b["token_type"] = "Bearer"
		b["expires_in"] = secs
		if len(t.scopes) > 0 {
			b["scope"] = strings.Join(t.scopes, " ")
		}
	}
	return rep
}

// write sends rep as JSON with the headers RFC 6749 5.1 asks for.
func write(w http.ResponseWriter, rep reply) {
	h := w.Header()
	for k, vs := range rep.header {
		h[k] = vs
	}
	h.Set("Content-Type", "application/json;charset=UTF-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Pragma", "no-cache")
	if rep.challenge {
		h.Set("WWW-Authenticate", `Basic realm="oauthtest"`)
	}
	w.WriteHeader(rep.status)
	json.NewEncoder(w).Encode(rep.body)
}
