package sources_test

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/sources"
	"github.com/tokenbroker/tokenbroker/sources/oauthtest"
)

// A password answer that carries a refresh token is renewed with it: one
// grant at the provider, rotation kept; a refused refresh token falls back
// to the password its Secrets function returns now.
func TestPasswordGrantRefreshes(t *testing.T) {
	p := oauthtest.StartTest(t, oauthtest.Options{Rotate: true})
	src, _, rotate := rotatableSource(t, p, setup{"vsrs", oauthtest.VSRS, sources.Password, nil})
	ctx := context.Background()
	if src.Spends(sources.Token{}) {
		t.Error("Spends with no refresh token = true; want false (the password spends nothing)")
	}
	first, err := src.Token(ctx, sources.Token{})
	if err != nil || first.RefreshToken.IsZero() {
		t.Fatalf("password grant: %v (refresh token present: %v)", err, !first.RefreshToken.IsZero())
	}
	if !src.Spends(first) {
		t.Error("Spends with a refresh token = false; want true (it is spent, under the lock)")
	}
	second, err := src.Token(ctx, first)
	if err != nil {
		t.Fatalf("second cycle: %v", err)
	}
	st := p.Stats()
	if st.ByGrant["refresh_token"] != 1 || st.ByGrant["password"] != 1 {
		t.Errorf("grants sent %v; want password once, then refresh_token once", st.ByGrant)
	}
	if second.RefreshToken.IsZero() || second.RefreshToken.Equal(first.RefreshToken) || !p.Valid(second.AccessToken.Reveal()) {
		t.Error("the refresh did not keep the rotated refresh token, or its access token is not valid")
	}

	// The grant is revoked at the provider: invalid_grant, then the password.
	p.Revoke(second.RefreshToken.Reveal())
	third, err := src.Token(ctx, second)
	if err != nil || !p.Valid(third.AccessToken.Reveal()) {
		t.Fatalf("after the refresh token was refused: %v; want a new grant from the password", err)
	}
	if st := p.Stats(); st.ByGrant["refresh_token"] != 2 || st.ByGrant["password"] != 2 {
		t.Errorf("grants sent %v; want a refused refresh_token, then the password", st.ByGrant)
	}

	// A reloaded password is the one the fallback sends; a wrong one is a
	// configuration to fix, not a grant to authorize again.
	rotate(sources.Secrets{ClientSecret: sources.NewSecret(secretValue), Password: sources.NewSecret("wrong")})
	p.Revoke(third.RefreshToken.Reveal())
	if _, err := src.Token(ctx, third); !errors.Is(err, sources.ErrRejected) || errors.Is(err, sources.ErrReauthorize) {
		t.Errorf("fallback with a wrong password: %v; want ErrRejected, not ErrReauthorize", err)
	}
}

// The provider rotates the refresh token, then drops the connection: the
// error says the answer was lost (so the token may be spent), the transport
// sent the request once (a reused keep-alive connection, POST and GET), and
// the retry with the old token is a reuse the provider punishes.
func TestAnswerLostAfterRotation(t *testing.T) {
	for _, s := range []setup{
		{"generic", oauthtest.Generic, sources.RefreshToken, nil},   // POST
		{"livepush", oauthtest.Livepush, sources.RefreshToken, nil}, // GET
	} {
		t.Run(s.provider, func(t *testing.T) {
			p := oauthtest.StartTest(t, oauthtest.Options{Rotate: true})
			src, e := newSource(t, p, s)
			e.HTTP = &http.Client{Transport: &http.Transport{}}
			ctx := context.Background()
			tok, err := src.Token(ctx, sources.Token{RefreshToken: sources.NewSecret(p.IssueRefreshToken(e.Client.ID))})
			if err != nil {
				t.Fatal(err)
			}
			p.Inject(oauthtest.Fault{AfterProcessing: true, Hangup: true})
			before := p.Stats()
			_, err = src.Token(ctx, tok)
			if !errors.Is(err, sources.ErrAnswerLost) {
				t.Fatalf("err = %v; want ErrAnswerLost", err)
			}
			if st := p.Stats(); st.TokenRequests != before.TokenRequests+1 || st.Refreshes != before.Refreshes+1 {
				t.Errorf("%d requests, %d rotations; want 1 and 1 (the transport must not resend a spending request)",
					st.TokenRequests-before.TokenRequests, st.Refreshes-before.Refreshes)
			}
			if _, err := src.Token(ctx, tok); !errors.Is(err, sources.ErrReauthorize) || p.Stats().ReuseEvents != 1 {
				t.Errorf("retry with the spent token: %v, %d reuse events; want ErrReauthorize and 1", err, p.Stats().ReuseEvents)
			}
		})
	}
}

// Only a request that was sent and then lost its answer is ErrAnswerLost:
// not one that never reached the provider, nor one the caller gave up on.
func TestAnswerLostOnlyAfterSending(t *testing.T) {
	p := oauthtest.StartTest(t, oauthtest.Options{})
	src, e := newSource(t, p, setup{"generic", oauthtest.Generic, sources.RefreshToken, nil})
	prev := sources.Token{RefreshToken: sources.NewSecret(p.IssueRefreshToken(e.Client.ID))}

	p.Inject(oauthtest.Fault{Delay: time.Minute})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := src.Token(ctx, prev); err == nil || errors.Is(err, sources.ErrAnswerLost) {
		t.Errorf("the caller gave up: %v; want an error that is not ErrAnswerLost", err)
	}
	p.ClearFaults()

	e.Dialect.TokenURL = "http://127.0.0.1:1/token" // nothing listens
	if _, err := src.Token(context.Background(), prev); err == nil || errors.Is(err, sources.ErrAnswerLost) {
		t.Errorf("connection refused: %v; want an error that is not ErrAnswerLost", err)
	}
}

// An http.Client Timeout cuts requests that spend nothing, never a refresh:
// the caller's context bounds that one.
func TestClientTimeoutSparesRefresh(t *testing.T) {
	p := oauthtest.StartTest(t, oauthtest.Options{})
	hc := &http.Client{Timeout: 100 * time.Millisecond}
	rt, e := newSource(t, p, setup{"generic", oauthtest.Generic, sources.RefreshToken, nil})
	e.HTTP = hc
	cc, e2 := newSource(t, p, setup{"generic", oauthtest.Generic, sources.ClientCredentials, []string{"a"}})
	e2.HTTP = hc

	p.Inject(oauthtest.Fault{Delay: 300 * time.Millisecond})
	if _, err := rt.Token(context.Background(), sources.Token{RefreshToken: sources.NewSecret(p.IssueRefreshToken(e.Client.ID))}); err != nil {
		t.Errorf("a refresh slower than the client's Timeout: %v; want it awaited", err)
	}
	p.Inject(oauthtest.Fault{Delay: 300 * time.Millisecond})
	if _, err := cc.Token(context.Background(), sources.Token{}); err == nil || errors.Is(err, sources.ErrAnswerLost) {
		t.Errorf("client_credentials slower than the client's Timeout: %v; want the Timeout to end it (not a lost answer: the client gave up)", err)
	}
}
