// Package fositetest runs a real OAuth 2.0 authorization server, built from
// github.com/ory/fosite with its in-memory storage, behind an httptest.Server
// on loopback, so tests can exercise the broker against an implementation we
// did not write. It is for tests only and must never be linked into the binary.
//
// Enabled grants: client_credentials, password, refresh_token and
// authorization_code (AuthURL auto-approves as Username, no PKCE).
//
// Refresh tokens rotate (fosite's default): every refresh_token grant
// invalidates the presented refresh token and its access token and returns a
// new pair. Presenting an already-rotated refresh token fails with HTTP 400
//
//	{"error":"invalid_grant","error_description":"The provided authorization grant (e.g., authorization code, resource owner credentials) or refresh token is invalid, expired, revoked, does not match the redirection URI used in the authorization request, or was issued to another client. The refresh token was already used."}
//
// (error_hint/error_debug are not sent). Treating reuse as theft (RFC 6819
// 5.2.2.3), fosite then revokes the whole family: the reused token is deleted
// (presenting it again yields invalid_grant "... The refresh token is malformed
// or not valid."), the newest refresh token of that grant is deactivated
// (presenting it yields the same "already used" body above) and its access
// token is deleted, so the legitimate holder must start over too.
//
// Delay makes the next token requests slow the way a provider behind a load
// balancer is: each is handled after the delay whatever its client does (a
// client that gave up meanwhile is not noticed), and its answer is written
// if the client still listens.
//
// expires_in is a JSON integer (seconds, int64), computed from an expiry
// rounded to the second, so it can be one less than AccessLifetime. Refresh
// tokens are issued by the password and authorization_code grants only when
// the granted scope contains "offline" or "offline_access"; client_credentials
// never issues one.
package fositetest

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ory/fosite"
	"github.com/ory/fosite/compose"
	"github.com/ory/fosite/storage"
	"golang.org/x/crypto/bcrypt"
)

// Server is a fosite-backed OAuth 2.0 token endpoint for tests, listening on
// loopback. ClientID must authenticate with client_secret_basic only and
// ClientID2 with client_secret_post only (fosite rejects the other method with
// invalid_client). Both clients may use every enabled grant and the scopes
// offline, offline_access and Options.Scopes.
type Server struct {
	URL         string // base URL, no trailing slash
	TokenURL    string // URL + "/token"
	AuthURL     string // URL + "/auth"; approves every request as Username
	RedirectURL string // registered redirect URI of both clients (never served)

	ClientID, ClientSecret   string // client_secret_basic
	ClientID2, ClientSecret2 string // client_secret_post
	Username, Password       string // resource owner for the password grant

	srv      *httptest.Server
	requests atomic.Int64
	reuses   atomic.Int64 // rotated refresh tokens presented again
	held     atomic.Int64 // delayed requests not handled yet
	overlap  atomic.Int64 // requests that came while one was held

	mu      sync.Mutex
	delay   time.Duration // for the next delayed requests
	delayed int           // how many requests are still to delay
	stop    chan struct{} // closed when the test ends
}

// Options configures Start. Zero lifetimes use fosite's defaults (1h access,
// 30 days refresh; RefreshLifetime -1 means refresh tokens never
// expire). Scopes are extra scopes the clients may request.
type Options struct {
	AccessLifetime, RefreshLifetime time.Duration
	Scopes                          []string
}

// Start starts a Server; t.Cleanup closes it.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	secret := make([]byte, 32) // fosite's HMAC strategy requires exactly 32 bytes
	if _, err := rand.Read(secret); err != nil {
		t.Fatal(err)
	}
	s := &Server{
		RedirectURL: "http://127.0.0.1/callback",
		ClientID:    "basic-client", ClientSecret: "basic-secret",
		ClientID2: "post-client", ClientSecret2: "post-secret",
		Username: "peter", Password: "secret",
	}
	scopes := append([]string{"offline", "offline_access"}, opts.Scopes...)
	store := storage.NewMemoryStore()
	store.Users[s.Username] = storage.MemoryUserRelation{Username: s.Username, Password: s.Password}
	for id, c := range map[string][2]string{
		s.ClientID:  {s.ClientSecret, "client_secret_basic"},
		s.ClientID2: {s.ClientSecret2, "client_secret_post"},
	} {
		hash, err := bcrypt.GenerateFromPassword([]byte(c[0]), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		store.Clients[id] = &fosite.DefaultOpenIDConnectClient{
			DefaultClient: &fosite.DefaultClient{
				ID:            id,
				Secret:        hash,
				RedirectURIs:  []string{s.RedirectURL},
				ResponseTypes: []string{"code"},
				GrantTypes:    []string{"client_credentials", "password", "refresh_token", "authorization_code"},
				Scopes:        scopes,
			},
			TokenEndpointAuthMethod: c[1],
		}
	}

	mux := http.NewServeMux()
	s.srv = httptest.NewServer(mux)
	t.Cleanup(s.srv.Close)
	s.stop = make(chan struct{})
	t.Cleanup(func() { close(s.stop) }) // runs before Close, which waits for the handlers
	s.URL, s.TokenURL, s.AuthURL = s.srv.URL, s.srv.URL+"/token", s.srv.URL+"/auth"

	config := &fosite.Config{
		AccessTokenLifespan:  opts.AccessLifetime,
		RefreshTokenLifespan: opts.RefreshLifetime,
		GlobalSecret:         secret,
		TokenURL:             s.TokenURL,
		HashCost:             bcrypt.MinCost,
	}
	provider := compose.Compose(config, store, compose.NewOAuth2HMACStrategy(config),
		compose.OAuth2AuthorizeExplicitFactory,
		compose.OAuth2ClientCredentialsGrantFactory,
		compose.OAuth2RefreshTokenGrantFactory,
		compose.OAuth2ResourceOwnerPasswordCredentialsFactory,
	)

	token := func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		ar, err := provider.NewAccessRequest(ctx, r, &fosite.DefaultSession{})
		if err == nil {
			if ar.GetGrantTypes().ExactOne("client_credentials") || ar.GetGrantTypes().ExactOne("password") {
				for _, sc := range ar.GetRequestedScopes() { // fosite already checked the client may ask
					ar.GrantScope(sc)
				}
			}
			var resp fosite.AccessResponder
			if resp, err = provider.NewAccessResponse(ctx, ar); err == nil {
				provider.WriteAccessResponse(ctx, w, ar, resp)
				return
			}
		}
		rfc := fosite.ErrorToRFC6749Error(err)
		if strings.Contains(rfc.GetDescription(), "already used") {
			s.reuses.Add(1)
		}
		t.Logf("fositetest: token request failed: %s (%s)", rfc.GetDescription(), rfc.DebugField)
		provider.WriteAccessError(ctx, w, ar, err)
	}
	mux.HandleFunc("/token", func(w http.ResponseWriter, r *http.Request) {
		s.requests.Add(1)
		if s.held.Load() > 0 {
			s.overlap.Add(1)
		}
		if d := s.takeDelay(); d > 0 {
			s.detached(w, r, d, token)
			return
		}
		token(w, r)
	})
	mux.HandleFunc("/auth", func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		ar, err := provider.NewAuthorizeRequest(ctx, r)
		if err == nil {
			for _, sc := range ar.GetRequestedScopes() {
				ar.GrantScope(sc)
			}
			var resp fosite.AuthorizeResponder
			if resp, err = provider.NewAuthorizeResponse(ctx, ar, &fosite.DefaultSession{Subject: s.Username}); err == nil {
				provider.WriteAuthorizeResponse(ctx, w, ar, resp)
				return
			}
		}
		t.Logf("fositetest: authorize request failed: %+v", err)
		provider.WriteAuthorizeError(ctx, w, ar, err)
	})
	return s
}

// InitialRefreshToken obtains a fresh refresh token via the password grant
// (scope "offline", client_secret_basic as ClientID) so refresh tests have a
// seed. Each call starts a new, independent token family.
func (s *Server) InitialRefreshToken(t testing.TB) string {
	t.Helper()
	form := url.Values{"grant_type": {"password"}, "username": {s.Username}, "password": {s.Password}, "scope": {"offline"}}
	req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, s.TokenURL, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(s.ClientID), url.QueryEscape(s.ClientSecret))
	resp, err := s.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		RefreshToken string `json:"refresh_token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != http.StatusOK || body.RefreshToken == "" {
		t.Fatalf("fositetest: password grant: status %d, err %v, no refresh token", resp.StatusCode, err)
	}
	return body.RefreshToken
}

// Delay makes the next n token requests wait d, then be handled whatever
// their client did meanwhile.
func (s *Server) Delay(d time.Duration, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.delay, s.delayed = d, n
}

func (s *Server) takeDelay() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.delayed == 0 {
		return 0
	}
	s.delayed--
	return s.delay
}

// detached handles r after d on a context its client's connection does
// not cancel, and writes the answer, which is lost if the client left.
func (s *Server) detached(w http.ResponseWriter, r *http.Request, d time.Duration, token http.HandlerFunc) {
	s.held.Add(1)
	handled := false
	defer func() {
		if !handled {
			s.held.Add(-1)
		}
	}()
	if err := r.ParseForm(); err != nil { // the body, while the client is there
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-s.stop:
		return
	}
	rec := httptest.NewRecorder()
	token(rec, r.Clone(context.WithoutCancel(r.Context())))
	handled = true
	s.held.Add(-1) // acted on; the client may send again once it has the answer
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	w.Write(rec.Body.Bytes())
}

// Overlapping returns how many token requests arrived while a delayed
// request was held, not yet acted on.
func (s *Server) Overlapping() int { return int(s.overlap.Load()) }

// Reuses returns how many times a rotated refresh token was presented
// again (each revoked its grant).
func (s *Server) Reuses() int { return int(s.reuses.Load()) }

// TokenRequests returns the number of requests the token endpoint has received,
// successful or not (InitialRefreshToken included).
func (s *Server) TokenRequests() int { return int(s.requests.Load()) }
