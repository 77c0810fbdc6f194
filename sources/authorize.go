package sources

import (
	"context"
	"errors"
	"net/url"
	"strings"

	"golang.org/x/oauth2"
)

// Authorizer runs the authorization-code flow (RFC 6749 4.1) for a
// credential that keeps a refresh token: RefreshTokenSource is one.
type Authorizer interface {
	// AuthCodeURL is the provider's authorization URL for state, with the
	// PKCE S256 challenge of verifier (RFC 7636).
	AuthCodeURL(state, verifier string) (string, error)
	// RedirectURI is where the provider sends the browser back.
	RedirectURI() string
	// ExchangeCode trades the code for a token.
	ExchangeCode(ctx context.Context, code, verifier string) (Token, error)
}

// NewVerifier returns a fresh PKCE code verifier.
func NewVerifier() string { return oauth2.GenerateVerifier() }

// AuthCodeURL implements Authorizer.
func (s *RefreshTokenSource) AuthCodeURL(state, verifier string) (string, error) {
	return s.Endpoint.AuthCodeURL(state, verifier)
}

// RedirectURI implements Authorizer.
func (s *RefreshTokenSource) RedirectURI() string { return s.Endpoint.Client.RedirectURI }

// ExchangeCode implements Authorizer: it trades an authorization code (and
// its PKCE verifier, when one was used) for a token, with the client
// secrets in use now.
func (s *RefreshTokenSource) ExchangeCode(ctx context.Context, code, verifier string) (Token, error) {
	v := url.Values{"code": {code}}
	if verifier != "" {
		v.Set("code_verifier", verifier)
	}
	return s.Endpoint.exchangeWith(ctx, AuthorizationCode, v, s.Endpoint.secrets(s.Secrets))
}

// AuthCodeURL builds the authorization URL in e's dialect. PKCE is always
// sent: a provider that does not know it ignores the parameters (RFC 6749
// 3.1), and one that does is protected against code interception.
func (e *Endpoint) AuthCodeURL(state, verifier string) (string, error) {
	d := e.dialect()
	if d.AuthorizeURL == "" {
		return "", errors.New("the provider has no authorization URL in its preset; set AUTHORIZE_URL")
	}
	u, err := url.Parse(d.AuthorizeURL)
	if err != nil {
		return "", errors.New("the authorization URL is not a URL; fix AUTHORIZE_URL")
	}
	q := u.Query()
	q.Set("response_type", "code")
	q.Set("client_id", e.Client.ID)
	if e.Client.RedirectURI != "" {
		q.Set("redirect_uri", e.Client.RedirectURI)
	}
	switch {
	case d.AuthorizeScope != "":
		q.Set("scope", d.AuthorizeScope)
	case len(e.Client.Scopes) > 0:
		q.Set("scope", strings.Join(e.Client.Scopes, d.scopeSeparator()))
	}
	q.Set("state", state)
	q.Set("code_challenge", oauth2.S256ChallengeFromVerifier(verifier))
	q.Set("code_challenge_method", "S256")
	u.RawQuery = q.Encode()
	return u.String(), nil
}
