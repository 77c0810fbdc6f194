package sources

import (
	"context"
	"fmt"
	"net/url"
	"sync/atomic"
)

// Source obtains a new token for one credential. prev is the token the
// credential holds now (zero at first); a refresh grant spends its refresh
// token. Implementations send one request per call and never retry.
type Source interface {
	Token(ctx context.Context, prev Token) (Token, error)
	Grant() Grant
}

// ErrNoRefreshToken means a refresh_token credential has none to spend:
// it was never authorized. It matches ErrReauthorize too.
var ErrNoRefreshToken error = noRefreshToken{}

type noRefreshToken struct{}

func (noRefreshToken) Error() string {
	return "no refresh token yet: the credential was never authorized"
}
func (noRefreshToken) Is(target error) bool { return target == ErrReauthorize }

// ClientCredentialsSource runs the client_credentials grant.
type ClientCredentialsSource struct{ Endpoint *Endpoint }

// Grant implements Source.
func (s *ClientCredentialsSource) Grant() Grant { return ClientCredentials }

// Token implements Source.
func (s *ClientCredentialsSource) Token(ctx context.Context, _ Token) (Token, error) {
	return s.Endpoint.Exchange(ctx, ClientCredentials, nil)
}

// RefreshTokenSource spends prev's refresh token. When the provider rotates
// it, the new one comes back in the Token; when the answer has none, the
// previous refresh token (and its expiry) carries over.
type RefreshTokenSource struct{ Endpoint *Endpoint }

// Grant implements Source.
func (s *RefreshTokenSource) Grant() Grant { return RefreshToken }

// Token implements Source.
func (s *RefreshTokenSource) Token(ctx context.Context, prev Token) (Token, error) {
	if prev.RefreshToken.IsZero() {
		return Token{}, ErrNoRefreshToken
	}
	t, err := s.Endpoint.Exchange(ctx, RefreshToken, url.Values{"refresh_token": {prev.RefreshToken.Reveal()}})
	if err != nil {
		return Token{}, err
	}
	if t.RefreshToken.IsZero() {
		t.RefreshToken, t.RefreshExpiry = prev.RefreshToken, prev.RefreshExpiry
	}
	return t, nil
}

// PasswordSource runs the resource owner password grant every time: it holds
// the password, so a refresh token would add state without adding anything.
type PasswordSource struct {
	Endpoint *Endpoint
	Username string
	Password Secret

	reloaded atomic.Pointer[Secret] // replaces Password once set
}

// SetPassword replaces the password while the source is in use.
func (s *PasswordSource) SetPassword(p Secret) { s.reloaded.Store(&p) }

// Grant implements Source.
func (s *PasswordSource) Grant() Grant { return Password }

// Token implements Source.
func (s *PasswordSource) Token(ctx context.Context, _ Token) (Token, error) {
	pw := s.Password
	if p := s.reloaded.Load(); p != nil {
		pw = *p
	}
	return s.Endpoint.Exchange(ctx, Password, url.Values{"username": {s.Username}, "password": {pw.Reveal()}})
}

// ExchangeCode trades an authorization code (and its PKCE verifier, when one
// was used) for a token.
func (e *Endpoint) ExchangeCode(ctx context.Context, code, verifier string) (Token, error) {
	v := url.Values{"code": {code}}
	if verifier != "" {
		v.Set("code_verifier", verifier)
	}
	return e.Exchange(ctx, AuthorizationCode, v)
}

// New returns the Source for grant g.
func New(g Grant, e *Endpoint, username string, password Secret) (Source, error) {
	switch g {
	case ClientCredentials:
		return &ClientCredentialsSource{Endpoint: e}, nil
	case RefreshToken:
		return &RefreshTokenSource{Endpoint: e}, nil
	case Password:
		return &PasswordSource{Endpoint: e, Username: username, Password: password}, nil
	}
	return nil, fmt.Errorf("grant %q cannot keep a token fresh (use client_credentials, refresh_token or password)", g)
}
