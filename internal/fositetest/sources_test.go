package fositetest_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokenbroker/tokenbroker/internal/fositetest"
	"github.com/tokenbroker/tokenbroker/sources"
)

// An authorization server we did not write (ory/fosite) agrees with our
// exchange: both client auth styles, client_credentials, password, and
// refresh with rotation and reuse detection.
func TestAgainstFosite(t *testing.T) {
	srv := fositetest.Start(t, fositetest.Options{AccessLifetime: 10 * time.Minute, Scopes: []string{"api"}})
	generic := func(auth oauth2.AuthStyle, id, secret string, scopes ...string) *sources.Endpoint {
		d, err := sources.Preset("generic", sources.ClientCredentials)
		if err != nil {
			t.Fatal(err)
		}
		d.TokenURL, d.ClientAuth = srv.TokenURL, auth
		return &sources.Endpoint{Dialect: &d, Client: sources.Client{ID: id, Secret: sources.NewSecret(secret), Scopes: scopes}}
	}
	basic := generic(oauth2.AuthStyleInHeader, srv.ClientID, srv.ClientSecret, "api")
	post := generic(oauth2.AuthStyleInParams, srv.ClientID2, srv.ClientSecret2, "api")
	ctx := context.Background()

	for name, e := range map[string]*sources.Endpoint{"basic": basic, "post": post} {
		tok, err := (&sources.ClientCredentialsSource{Endpoint: e}).Token(ctx, sources.Token{})
		if err != nil {
			t.Fatalf("client_credentials (%s): %v", name, err)
		}
		if l := tok.Lifetime(); l < 9*time.Minute || l > 10*time.Minute {
			t.Errorf("client_credentials (%s): lifetime %v; want ~10m", name, l)
		}
	}

	wrong := generic(oauth2.AuthStyleInParams, srv.ClientID, srv.ClientSecret, "api")
	if _, err := (&sources.ClientCredentialsSource{Endpoint: wrong}).Token(ctx, sources.Token{}); !errors.Is(err, sources.ErrRejected) {
		t.Errorf("wrong client auth style: err = %v; want ErrRejected (invalid_client)", err)
	}

	pw := generic(oauth2.AuthStyleInHeader, srv.ClientID, srv.ClientSecret, "offline")
	tok, err := (&sources.PasswordSource{Endpoint: pw, Username: srv.Username,
		Secrets: sources.StaticSecrets(sources.Secrets{ClientSecret: sources.NewSecret(srv.ClientSecret), Password: sources.NewSecret(srv.Password)})}).Token(ctx, sources.Token{})
	if err != nil || tok.RefreshToken.IsZero() {
		t.Fatalf("password grant: %v (refresh token present: %v)", err, !tok.RefreshToken.IsZero())
	}

	refresh := &sources.RefreshTokenSource{Endpoint: generic(oauth2.AuthStyleInHeader, srv.ClientID, srv.ClientSecret)}
	first := tok
	for i := range 3 {
		next, err := refresh.Token(ctx, tok)
		if err != nil {
			t.Fatalf("refresh %d: %v", i, err)
		}
		if next.RefreshToken.Equal(tok.RefreshToken) {
			t.Fatalf("refresh %d: fosite did not rotate the refresh token", i)
		}
		tok = next
	}
	if _, err := refresh.Token(ctx, first); !errors.Is(err, sources.ErrReauthorize) {
		t.Errorf("reused rotated refresh token: err = %v; want ErrReauthorize", err)
	}
}
