package sources_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/tokenbroker/tokenbroker/sources"
	"github.com/tokenbroker/tokenbroker/sources/oauthtest"
)

// A client secret rotated with an overlap: the previous secret is tried
// once after invalid_client, on every dialect that sends a secret, and a
// rotating refresh token is never spent twice by the retry.
func TestPreviousClientSecret(t *testing.T) {
	const oldSecret, newSecret = "OLD-secret-77aa", "NEW-secret-88bb"
	for _, s := range setups {
		if s.provider == "firework" && s.grant == sources.RefreshToken {
			continue // Firework refreshes by client_id alone: no secret to rotate
		}
		t.Run(s.provider+"/"+string(s.grant), func(t *testing.T) {
			p := oauthtest.StartTest(t, oauthtest.Options{Rotate: true})
			src, e, rotate := rotatableSource(t, p, s)
			id := e.Client.ID
			var logs bytes.Buffer
			log := slog.New(slog.NewTextHandler(&logs, nil))
			e.Warn = func(msg string) { log.Warn(msg) }
			register := func(secret string, others ...string) {
				p.AddClient(oauthtest.Client{ID: id, Secret: secret, OtherSecrets: others, Scopes: s.scopes,
					RedirectURI: "https://app.example/cb", Dialect: s.dialect})
			}
			prev := func() sources.Token {
				if s.grant != sources.RefreshToken {
					return sources.Token{}
				}
				return sources.Token{RefreshToken: sources.NewSecret(p.IssueRefreshToken(id))}
			}

			// The provider still knows only the old secret; we hold the new
			// one and the old one as previous.
			register(oldSecret)
			rotate(sources.Secrets{ClientSecret: sources.NewSecret(newSecret), PreviousClientSecret: sources.NewSecret(oldSecret),
				Password: sources.NewSecret(passwordValue)})
			before := p.Stats().TokenRequests
			if _, err := src.Token(context.Background(), prev()); err != nil {
				t.Fatalf("with the previous secret accepted: %v", err)
			}
			if n := p.Stats().TokenRequests - before; n != 2 {
				t.Errorf("%d requests, want 2 (current refused, previous accepted)", n)
			}
			if !strings.Contains(logs.String(), "accepted the previous one") {
				t.Errorf("no warning that the previous secret was needed: %q", logs.String())
			}

			// The provider has moved to the new secret: one request.
			register(newSecret)
			before = p.Stats().TokenRequests
			if _, err := src.Token(context.Background(), prev()); err != nil {
				t.Fatal(err)
			}
			if n := p.Stats().TokenRequests - before; n != 1 {
				t.Errorf("%d requests, want 1", n)
			}

			// Neither is accepted: the current secret's invalid_client.
			register("something-else")
			_, err := src.Token(context.Background(), prev())
			var pe *sources.ProviderError
			if !errors.As(err, &pe) || pe.Code != "invalid_client" || !errors.Is(err, sources.ErrRejected) {
				t.Errorf("neither secret accepted: %v; want invalid_client, rejected", err)
			}
			for _, secret := range []string{oldSecret, newSecret} {
				if strings.Contains(err.Error(), secret) || strings.Contains(logs.String(), secret) {
					t.Errorf("a secret leaked: %v / %s", err, logs.String())
				}
			}

			// Without a previous secret: no second request.
			rotate(sources.Secrets{ClientSecret: sources.NewSecret(newSecret), Password: sources.NewSecret(passwordValue)})
			before = p.Stats().TokenRequests
			_, _ = src.Token(context.Background(), prev())
			if n := p.Stats().TokenRequests - before; n != 1 {
				t.Errorf("without a previous secret: %d requests, want 1", n)
			}
			if st := p.Stats(); st.ReuseEvents != 0 {
				t.Errorf("%d refresh token reuse events, want 0", st.ReuseEvents)
			}
		})
	}
}

// An authorization code is traded with the client secret in use now, not
// the one configured at start: after a rotation, authorize works at once.
func TestExchangeCodeSendsRotatedSecret(t *testing.T) {
	const newSecret = "NEW-secret-for-code-5e5e"
	for _, s := range []setup{
		{"generic", oauthtest.Generic, sources.RefreshToken, nil}, // HTTP Basic
		{"vsrs", oauthtest.VSRS, sources.RefreshToken, nil},       // in the body
	} {
		t.Run(s.provider, func(t *testing.T) {
			p := oauthtest.StartTest(t, oauthtest.Options{})
			src, e, rotate := rotatableSource(t, p, s)
			az, ok := src.(sources.Authorizer)
			if !ok {
				t.Fatalf("%T is not an Authorizer", src)
			}
			const cb = "https://app.example/cb"
			p.AddClient(oauthtest.Client{ID: e.Client.ID, Secret: newSecret, RedirectURI: cb, Dialect: s.dialect})
			if _, err := az.ExchangeCode(context.Background(), p.IssueCode(e.Client.ID, cb, nil), ""); !errors.Is(err, sources.ErrRejected) {
				t.Fatalf("code with the old secret: %v; want ErrRejected (invalid_client)", err)
			}
			rotate(sources.Secrets{ClientSecret: sources.NewSecret(newSecret)})
			tok, err := az.ExchangeCode(context.Background(), p.IssueCode(e.Client.ID, cb, nil), "")
			if err != nil || !p.Valid(tok.AccessToken.Reveal()) {
				t.Fatalf("code with the rotated secret: %v; want a valid token", err)
			}
		})
	}
}
