package sources

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/oauth2"
)

// Client is the OAuth client the broker acts as.
type Client struct {
	ID string
	// Secret and PreviousSecret are the secrets configured at start: the
	// ones a Source without a Secrets function sends (see Secrets).
	Secret         Secret
	PreviousSecret Secret
	RedirectURI    string
	Scopes         []string
}

// Secrets are what a Source proves itself with and an operator may rotate
// while it runs. A Source asks its Secrets function for them at every
// request, so a rotation applies from the next request on.
type Secrets struct {
	ClientSecret Secret
	// PreviousClientSecret, when set, is tried once when the provider
	// answers invalid_client to ClientSecret: a fleet rolling to a new
	// secret keeps working while the provider accepts both.
	PreviousClientSecret Secret
	Password             Secret // the resource owner's, for the password grant
}

// StaticSecrets returns a Secrets function that always returns s, for a
// Source whose secrets never change.
func StaticSecrets(s Secrets) func() Secrets { return func() Secrets { return s } }

// Endpoint sends token requests for one credential in its provider's Dialect.
type Endpoint struct {
	// Dialect is shared by every credential configured alike (a Dialect is
	// over 250 bytes; 5,000 copies are more than a megabyte), so it must
	// not change once in use. nil means the zero Dialect.
	Dialect *Dialect
	Client  Client
	// HTTP sends the requests; nil means a client with a 30 s timeout. A
	// refresh_token request ignores the client's Timeout: once sent, its
	// answer may hold the only copy of a rotated refresh token, so only
	// the caller's context bounds it.
	HTTP *http.Client
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Warn, when set, hears that the previous client secret was needed.
	// A function, not a logger per credential: 10k credentials each with
	// their own slog handler would cost more than the rest of them.
	Warn func(msg string)
}

// secrets returns what f returns, or with f nil the Client's secrets.
func (e *Endpoint) secrets(f func() Secrets) Secrets {
	if f != nil {
		return f()
	}
	return Secrets{ClientSecret: e.Client.Secret, PreviousClientSecret: e.Client.PreviousSecret}
}

var defaultHTTP = &http.Client{Timeout: 30 * time.Second}

func (e *Endpoint) dialect() *Dialect {
	if e.Dialect == nil {
		return &Dialect{}
	}
	return e.Dialect
}

// Exchange runs one token request for grant g with the grant's own params
// (refresh_token, username, code, ...) and the Client's secrets, and parses
// the answer. It sends the request exactly once: a retry is the caller's
// decision.
//
// When the provider answers invalid_client and a previous client secret is
// set, the request is sent once more with it: a provider authenticates the
// client before it looks at a grant, so nothing was spent.
func (e *Endpoint) Exchange(ctx context.Context, g Grant, params url.Values) (Token, error) {
	return e.exchangeWith(ctx, g, params, e.secrets(nil))
}

// exchangeWith is Exchange with the client secrets of s.
func (e *Endpoint) exchangeWith(ctx context.Context, g Grant, params url.Values, s Secrets) (Token, error) {
	current, previous := s.ClientSecret, s.PreviousClientSecret
	t, err := e.exchange(ctx, g, params, current)
	var pe *ProviderError
	if err == nil || previous.IsZero() || !errors.As(err, &pe) || pe.Code != "invalid_client" {
		return t, err
	}
	t, err2 := e.exchange(ctx, g, params, previous)
	if err2 != nil {
		return Token{}, err // the current secret's refusal is the one to fix
	}
	if e.Warn != nil {
		e.Warn("the provider refused the current client secret and accepted the previous one; finish the rotation at the provider, then drop the previous secret")
	}
	return t, nil
}

func (e *Endpoint) exchange(ctx context.Context, g Grant, params url.Values, secret Secret) (Token, error) {
	d := e.dialect()
	req, err := e.request(ctx, g, params, secret)
	if err != nil {
		return Token{}, err
	}
	now := time.Now
	if e.Now != nil {
		now = e.Now
	}
	hc := e.HTTP
	if hc == nil {
		hc = defaultHTTP
	}
	if g == RefreshToken && hc.Timeout > 0 {
		unbounded := *hc
		unbounded.Timeout = 0
		hc = &unbounded
	}
	var written atomic.Bool
	req = req.WithContext(OnWritten(ctx, func() { written.Store(true) }))
	start := now()
	resp, err := hc.Do(req)
	if err != nil {
		return Token{}, answerLost(ctx, &written, transportError(req, err))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return Token{}, answerLost(ctx, &written, fmt.Errorf("%s %s: reading the answer: %w", req.Method, redactURL(req.URL), stripURL(err)))
	}
	return d.parse(g, answer{status: resp.StatusCode, header: resp.Header, body: body}, start)
}

// OnWritten returns a context under which a token request calls f once it
// has been written to the provider in full: from then on the provider may
// act on it whatever the client does.
func OnWritten(ctx context.Context, f func()) context.Context {
	return httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{WroteRequest: func(i httptrace.WroteRequestInfo) {
		if i.Err == nil {
			f()
		}
	}})
}

// answerLost marks err as ErrAnswerLost when the request was written and
// the connection then failed with no answer, though neither the caller nor
// a client Timeout gave up: the provider may have acted on it.
func answerLost(ctx context.Context, written *atomic.Bool, err error) error {
	var ne net.Error
	if !written.Load() || ctx.Err() != nil || (errors.As(err, &ne) && ne.Timeout()) {
		return err
	}
	return &lostError{err}
}

func (e *Endpoint) request(ctx context.Context, g Grant, params url.Values, secret Secret) (*http.Request, error) {
	d := e.dialect()
	v := url.Values{}
	for k, vs := range params {
		v[k] = vs
	}
	v.Set("grant_type", string(g))
	sendSecret := !(g == RefreshToken && d.RefreshOmitsSecret)
	basic := d.ClientAuth == oauth2.AuthStyleInHeader && sendSecret
	if !basic {
		v.Set("client_id", e.Client.ID)
		if sendSecret && !secret.IsZero() {
			v.Set("client_secret", secret.Reveal())
		}
	}
	if len(e.Client.Scopes) > 0 && (g != RefreshToken || d.RefreshSendsScope) && g != AuthorizationCode {
		v.Set("scope", strings.Join(e.Client.Scopes, d.scopeSeparator()))
	}
	if e.Client.RedirectURI != "" && (g == AuthorizationCode || (g == RefreshToken && d.RefreshSendsRedirect)) {
		v.Set("redirect_uri", e.Client.RedirectURI)
	}

	u, err := url.Parse(d.TokenURL)
	if err != nil {
		return nil, fmt.Errorf("token URL: %w", err)
	}
	var body io.Reader
	if d.placement() == InQuery {
		q := u.Query()
		for k, vs := range v {
			q[k] = vs
		}
		u.RawQuery = q.Encode()
	} else {
		body = strings.NewReader(v.Encode())
	}
	req, err := http.NewRequestWithContext(ctx, d.method(), u.String(), body)
	if err != nil {
		return nil, fmt.Errorf("token request: %w", stripURL(err))
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if req.Method == http.MethodGet {
		// net/http silently resends an idempotent request that fails on a
		// reused connection; for a GET token endpoint that would replay a
		// rotating refresh token. A fresh connection is never retried.
		req.Close = true
	}
	req.Header.Set("Accept", "application/json")
	for k, val := range d.Headers {
		req.Header.Set(k, val)
	}
	if basic {
		// RFC 6749 §2.3.1: form-encode id and secret before Basic.
		req.SetBasicAuth(url.QueryEscape(e.Client.ID), url.QueryEscape(secret.Reveal()))
	}
	return req, nil
}

// transportError reports a failed round trip without the URL's query, which
// may hold a client secret or refresh token (GET and query dialects).
func transportError(req *http.Request, err error) error {
	return fmt.Errorf("%s %s: %w", req.Method, redactURL(req.URL), stripURL(err))
}

// stripURL unwraps *url.Error, whose message repeats the full URL.
func stripURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

func redactURL(u *url.URL) string {
	c := *u
	c.RawQuery, c.User, c.Fragment = "", nil, ""
	return c.String()
}
