package sources

import (
	"context"
	"errors"
	"fmt"
	"net/url"
)

// Source obtains a new token for one credential. prev is the token the
// credential holds now (zero at first); a refresh grant spends its refresh
// token. Implementations send one request per call and never retry, except
// where a refused refresh token leaves a grant of their own to fall back on
// (PasswordSource).
type Source interface {
	Token(ctx context.Context, prev Token) (Token, error)
	Grant() Grant
	// Spends reports whether Token(ctx, prev) would spend a token the
	// provider may rotate: then the caller must hold the refresh lock, must
	// not send it twice, and must await a request once sent.
	Spends(prev Token) bool
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
type ClientCredentialsSource struct {
	Endpoint *Endpoint
	// Secrets returns the client secrets to send now; nil means the
	// Endpoint's Client secrets. It is called at every request.
	Secrets func() Secrets
}

// Grant implements Source.
func (s *ClientCredentialsSource) Grant() Grant { return ClientCredentials }

// Spends implements Source: client_credentials spends nothing.
func (s *ClientCredentialsSource) Spends(Token) bool { return false }

// Token implements Source.
func (s *ClientCredentialsSource) Token(ctx context.Context, _ Token) (Token, error) {
	return s.Endpoint.exchangeWith(ctx, ClientCredentials, nil, s.Endpoint.secrets(s.Secrets))
}

// RefreshTokenSource spends prev's refresh token. When the provider rotates
// it, the new one comes back in the Token; when the answer has none, the
// previous refresh token (and its expiry) carries over.
type RefreshTokenSource struct {
	Endpoint *Endpoint
	// Secrets returns the client secrets to send now; nil means the
	// Endpoint's Client secrets. It is called at every request.
	Secrets func() Secrets
}

// Grant implements Source.
func (s *RefreshTokenSource) Grant() Grant { return RefreshToken }

// Spends implements Source: every refresh spends the refresh token.
func (s *RefreshTokenSource) Spends(Token) bool { return true }

// Token implements Source.
func (s *RefreshTokenSource) Token(ctx context.Context, prev Token) (Token, error) {
	if prev.RefreshToken.IsZero() {
		return Token{}, ErrNoRefreshToken
	}
	return refresh(ctx, s.Endpoint, prev, s.Endpoint.secrets(s.Secrets))
}

// refresh spends prev's refresh token at e.
func refresh(ctx context.Context, e *Endpoint, prev Token, sec Secrets) (Token, error) {
	t, err := e.exchangeWith(ctx, RefreshToken, url.Values{"refresh_token": {prev.RefreshToken.Reveal()}}, sec)
	if err != nil {
		return Token{}, err
	}
	if t.RefreshToken.IsZero() {
		t.RefreshToken, t.RefreshExpiry = prev.RefreshToken, prev.RefreshExpiry
	}
	return t, nil
}

// PasswordSource runs the resource owner password grant, and refreshes with
// the refresh token its answer carries, when it carries one: each password
// request opens a new grant at the provider, a refresh renews the one it
// holds. When the provider refuses the refresh token (invalid_grant), the
// password opens a new grant.
type PasswordSource struct {
	Endpoint *Endpoint
	Username string
	// Secrets returns the password and the client secrets to send now. It
	// is called at every request. nil means the Endpoint's Client secrets
	// and no password.
	Secrets func() Secrets
}

// Grant implements Source.
func (s *PasswordSource) Grant() Grant { return Password }

// Spends implements Source: a refresh token, once the provider issued one.
func (s *PasswordSource) Spends(prev Token) bool { return !prev.RefreshToken.IsZero() }

// Token implements Source.
func (s *PasswordSource) Token(ctx context.Context, prev Token) (Token, error) {
	if prev.RefreshToken.IsZero() {
		return s.password(ctx)
	}
	t, err := refresh(ctx, s.Endpoint, prev, s.Endpoint.secrets(s.Secrets))
	var pe *ProviderError
	if errors.As(err, &pe) && pe.Code == "invalid_grant" {
		// The refresh token is dead (expired, revoked); the password is not.
		return s.password(ctx)
	}
	return t, err
}

func (s *PasswordSource) password(ctx context.Context) (Token, error) {
	sec := s.Endpoint.secrets(s.Secrets) // read again: the refresh before may have waited long
	return s.Endpoint.exchangeWith(ctx, Password, url.Values{"username": {s.Username}, "password": {sec.Password.Reveal()}}, sec)
}

// New returns the Source for grant g, sending at e as username with the
// secrets that secrets returns at each request. cmd passes a function over
// a value its reload replaces; a nil secrets means e's Client secrets and
// no password.
func New(g Grant, e *Endpoint, username string, secrets func() Secrets) (Source, error) {
	switch g {
	case ClientCredentials:
		return &ClientCredentialsSource{Endpoint: e, Secrets: secrets}, nil
	case RefreshToken:
		return &RefreshTokenSource{Endpoint: e, Secrets: secrets}, nil
	case Password:
		return &PasswordSource{Endpoint: e, Username: username, Secrets: secrets}, nil
	}
	return nil, fmt.Errorf("grant %q cannot keep a token fresh (use client_credentials, refresh_token or password)", g)
}
