package sources_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/sources"
	"github.com/tokenbroker/tokenbroker/sources/oauthtest"
)

const (
	secretValue   = "client-SECRET-4f1d"
	passwordValue = "user-PASSWORD-99aa"
)

type setup struct {
	provider string
	dialect  oauthtest.Dialect
	grant    sources.Grant
	scopes   []string
}

// newSource registers a client for s at p and returns the Source for it.
func newSource(t *testing.T, p *oauthtest.Provider, s setup) (sources.Source, *sources.Endpoint) {
	t.Helper()
	src, e, _ := rotatableSource(t, p, s)
	return src, e
}

// rotatableSource is newSource, with a function that replaces the secrets
// the Source sends from its next request on, as cmd's reload does.
func rotatableSource(t *testing.T, p *oauthtest.Provider, s setup) (sources.Source, *sources.Endpoint, func(sources.Secrets)) {
	t.Helper()
	d, err := sources.Preset(s.provider, s.grant)
	if err != nil {
		t.Fatal(err)
	}
	d.TokenURL = p.TokenURL(s.dialect)
	id := string(s.dialect) + "-" + string(s.grant)
	p.AddClient(oauthtest.Client{ID: id, Secret: secretValue, Scopes: s.scopes, RedirectURI: "https://app.example/cb", Dialect: s.dialect})
	p.AddUser("alice", passwordValue)
	e := &sources.Endpoint{Dialect: &d, Client: sources.Client{ID: id, RedirectURI: "https://app.example/cb", Scopes: s.scopes}}
	var held atomic.Pointer[sources.Secrets]
	held.Store(&sources.Secrets{ClientSecret: sources.NewSecret(secretValue), Password: sources.NewSecret(passwordValue)})
	src, err := sources.New(s.grant, e, "alice", func() sources.Secrets { return *held.Load() })
	if err != nil {
		t.Fatal(err)
	}
	return src, e, func(s sources.Secrets) { held.Store(&s) }
}

var setups = []setup{
	{"firework", oauthtest.Firework, sources.ClientCredentials, []string{"videos:write", "livestreams:read"}},
	{"firework", oauthtest.Firework, sources.RefreshToken, nil},
	{"livepush", oauthtest.Livepush, sources.RefreshToken, nil},
	{"ingest", oauthtest.Ingest, sources.ClientCredentials, []string{"read_videos", "write_videos"}},
	{"ingest", oauthtest.Ingest, sources.RefreshToken, nil},
	{"vsrs", oauthtest.VSRS, sources.Password, nil},
	{"vsrs", oauthtest.VSRS, sources.RefreshToken, nil},
	{"generic", oauthtest.Generic, sources.ClientCredentials, []string{"a", "b"}},
	{"generic", oauthtest.Generic, sources.Password, nil},
	{"generic", oauthtest.Generic, sources.RefreshToken, nil},
}

// Every preset obtains valid tokens from a provider as strict as the real
// one, and refresh chains with rotation never reuse a refresh token.
func TestEveryDialectAgainstLocalProvider(t *testing.T) {
	for _, rotate := range []bool{false, true} {
		p := oauthtest.StartTest(t, oauthtest.Options{AccessLifetime: 20 * time.Minute, Rotate: rotate})
		for _, s := range setups {
			t.Run(s.provider+"/"+string(s.grant)+map[bool]string{true: "/rotating"}[rotate], func(t *testing.T) {
				src, e := newSource(t, p, s)
				var prev sources.Token
				if s.grant == sources.RefreshToken {
					prev.RefreshToken = sources.NewSecret(p.IssueRefreshToken(e.Client.ID))
				}
				for i := range 3 {
					before := time.Now()
					tok, err := src.Token(context.Background(), prev)
					if err != nil {
						t.Fatalf("exchange %d: %v", i, err)
					}
					if !p.Valid(tok.AccessToken.Reveal()) {
						t.Fatalf("exchange %d: provider says the access token is not valid", i)
					}
					if l := tok.Lifetime(); l != 20*time.Minute {
						t.Errorf("lifetime = %v; want 20m", l)
					}
					if tok.IssuedAt.Before(before) || tok.IssuedAt.After(time.Now()) {
						t.Errorf("IssuedAt %v is not the request's start", tok.IssuedAt)
					}
					if s.grant == sources.RefreshToken && tok.RefreshToken.IsZero() {
						t.Fatalf("exchange %d: refresh token lost", i)
					}
					prev = tok
				}
			})
		}
		if st := p.Stats(); st.ReuseEvents != 0 {
			t.Errorf("reuse events = %d; want 0", st.ReuseEvents)
		}
	}
}

// A reused rotated refresh token is refused with invalid_grant, which
// classifies as needing re-authorization.
func TestReusedRefreshTokenNeedsReauthorization(t *testing.T) {
	p := oauthtest.StartTest(t, oauthtest.Options{Rotate: true})
	src, e := newSource(t, p, setup{"firework", oauthtest.Firework, sources.RefreshToken, nil})
	first := sources.Token{RefreshToken: sources.NewSecret(p.IssueRefreshToken(e.Client.ID))}
	if _, err := src.Token(context.Background(), first); err != nil {
		t.Fatal(err)
	}
	_, err := src.Token(context.Background(), first)
	if !errors.Is(err, sources.ErrReauthorize) {
		t.Fatalf("reusing a rotated refresh token: err = %v; want ErrReauthorize", err)
	}
}

// Faults become classified errors that never carry a secret, even for the
// dialects that put the secret in the URL.
func TestFaultsAreClassifiedAndRedacted(t *testing.T) {
	p := oauthtest.StartTest(t, oauthtest.Options{})
	tests := []struct {
		fault     oauthtest.Fault
		transient bool
		want      string
	}{
		{oauthtest.Fault{Status: 503, RetryAfter: "3"}, true, "retry after 3s"},
		{oauthtest.Fault{Status: 429}, true, "429"},
		{oauthtest.Fault{OAuthError: "temporarily_unavailable", Status: 503}, true, "temporarily_unavailable"},
		{oauthtest.Fault{Status: 200, Body: "<html>maintenance</html>", BodySet: true, ContentType: "text/html"}, true, "HTML"},
		{oauthtest.Fault{Status: 200, Body: "", BodySet: true}, true, "empty body"},
		{oauthtest.Fault{Status: 200, Body: `{"access_token":"x`, BodySet: true}, true, "truncated"},
		{oauthtest.Fault{Status: 200, Body: `{"error":"invalid_client"}`, BodySet: true}, false, "invalid_client"},
		{oauthtest.Fault{Hangup: true}, true, "EOF"},
	}
	for _, s := range []setup{setups[2], setups[1]} { // livepush GET and firework query: secrets in the URL
		src, e := newSource(t, p, s)
		prev := sources.Token{RefreshToken: sources.NewSecret(p.IssueRefreshToken(e.Client.ID))}
		for _, tt := range tests {
			f := tt.fault
			f.ClientID = e.Client.ID
			p.Inject(f)
			_, err := src.Token(context.Background(), prev)
			if err == nil {
				t.Fatalf("%s %+v: no error", s.provider, tt.fault)
			}
			if got := !errors.Is(err, sources.ErrRejected); got != tt.transient {
				t.Errorf("%s %+v: transient = %v; want %v (%v)", s.provider, tt.fault, got, tt.transient, err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("%s: error %q does not mention %q", s.provider, err, tt.want)
			}
			for _, secret := range []string{secretValue, prev.RefreshToken.Reveal()} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("%s: error %q contains a secret", s.provider, err)
				}
			}
		}
	}
	// Nobody listening: a transport error, still without the URL's secrets.
	p.Close()
	src, e := newSource(t, oauthtest.StartTest(t, oauthtest.Options{}), setups[2])
	e.Dialect.TokenURL = p.TokenURL(oauthtest.Livepush)
	_, err := src.Token(context.Background(), sources.Token{RefreshToken: sources.NewSecret("rt-in-url")})
	if err == nil || strings.Contains(err.Error(), secretValue) || strings.Contains(err.Error(), "rt-in-url") {
		t.Errorf("connection refused error = %v; want an error without secrets", err)
	}
}

// A slow provider is cut off by the caller's context.
func TestSlowProviderHonoursContext(t *testing.T) {
	p := oauthtest.StartTest(t, oauthtest.Options{})
	src, _ := newSource(t, p, setups[0])
	p.Inject(oauthtest.Fault{Delay: time.Minute})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := src.Token(ctx, sources.Token{})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v; want context.DeadlineExceeded", err)
	}
}

// Ingest sends its vendor Accept header; the provider refuses without it.
func TestDialectHeadersAreSent(t *testing.T) {
	p := oauthtest.StartTest(t, oauthtest.Options{})
	src, e := newSource(t, p, setups[3])
	if _, err := src.Token(context.Background(), sources.Token{}); err != nil {
		t.Fatalf("ingest with its Accept header: %v", err)
	}
	e.Dialect.Headers = nil
	if _, err := src.Token(context.Background(), sources.Token{}); err == nil {
		t.Error("ingest without its Accept header succeeded; the provider should refuse it")
	}
	_ = http.StatusOK
}
