package api_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/api"
	"github.com/tokenbroker/tokenbroker/api/client"
	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/broker/store/file"
	"github.com/tokenbroker/tokenbroker/internal/tbtest"
	"github.com/tokenbroker/tokenbroker/internal/tbtest/fakebroker"
	"github.com/tokenbroker/tokenbroker/sources"
)

// The fake serves the API as a broker would.
var _ api.Broker = (*fakebroker.Broker)(nil)

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

func handler(t testing.TB, b api.Broker) http.Handler {
	t.Helper()
	return api.NewServer(b, api.Options{Logger: discard()}).Handler()
}

func serveHTTP(h http.Handler, method, target string) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	h.ServeHTTP(w, newRequest(method, target))
	return w
}

// newRequest is a request as the CLI and the client library send it.
func newRequest(method, target string) *http.Request {
	r := httptest.NewRequest(method, target, nil)
	r.Header.Set("X-Tokenbroker", "1")
	return r
}

type errorBody struct {
	Error       string   `json:"error"`
	Description string   `json:"error_description"`
	Endpoints   []string `json:"endpoints"`
}

// wantError checks an error answer's status, headers and JSON shape.
func wantError(t *testing.T, w *httptest.ResponseRecorder, status int, code string) errorBody {
	t.Helper()
	if w.Code != status {
		t.Fatalf("status = %d, want %d; body %s", w.Code, status, w.Body)
	}
	if ct := w.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	var e errorBody
	if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil {
		t.Fatalf("body is not JSON (%v): %s", err, w.Body)
	}
	if e.Error != code {
		t.Errorf("error = %q, want %q; body %s", e.Error, code, w.Body)
	}
	if e.Description == "" {
		t.Errorf("error_description is empty; body %s", w.Body)
	}
	if strings.Contains(w.Body.String(), fakebroker.SecretToken) {
		t.Errorf("error answer holds the access token: %s", w.Body)
	}
	return e
}

func TestHandout(t *testing.T) {
	f := fakebroker.New()
	w := serveHTTP(handler(t, f), "GET", "/v1/tokens/svc")
	if w.Code != http.StatusOK {
		t.Fatalf("status = %d, want 200; body %s", w.Code, w.Body)
	}
	for h, want := range map[string]string{"Content-Type": "application/json", "Cache-Control": "no-store"} {
		if got := w.Header().Get(h); got != want {
			t.Errorf("%s = %q, want %q", h, got, want)
		}
	}
	var raw map[string]any
	if err := json.Unmarshal(w.Body.Bytes(), &raw); err != nil {
		t.Fatalf("body is not JSON (%v): %s", err, w.Body)
	}
	keys := slices.Sorted(func(yield func(string) bool) {
		for k := range raw {
			if !yield(k) {
				return
			}
		}
	})
	if want := []string{"access_token", "expires_at", "expires_in", "token_type"}; !slices.Equal(keys, want) {
		t.Errorf("keys = %v, want %v", keys, want)
	}
	var got struct {
		AccessToken string `json:"access_token"`
		TokenType   string `json:"token_type"`
		ExpiresIn   any    `json:"expires_in"`
		ExpiresAt   string `json:"expires_at"`
	}
	_ = json.Unmarshal(w.Body.Bytes(), &got)
	if got.AccessToken != fakebroker.SecretToken || got.TokenType != "Bearer" {
		t.Errorf("access_token, token_type = %q, %q; want the fake's token, Bearer", got.AccessToken, got.TokenType)
	}
	in, ok := got.ExpiresIn.(float64)
	if !ok || in != float64(int(in)) || in < 3590 || in > 3599 {
		t.Errorf("expires_in = %v, want whole seconds just under 3600", got.ExpiresIn)
	}
	exp := f.Tokens["svc"].Expiry
	if want := exp.UTC().Truncate(time.Second).Format(time.RFC3339); got.ExpiresAt != want {
		t.Errorf("expires_at = %q, want %q", got.ExpiresAt, want)
	}
	if !strings.HasSuffix(got.ExpiresAt, "Z") {
		t.Errorf("expires_at = %q, want UTC", got.ExpiresAt)
	}
}

func TestHandoutEscapesToken(t *testing.T) {
	for _, tok := range []string{`plain.ASCII-token_~+/=`, `q"uote\back`, "ctl\x00\x01\n\r\t\x1f\x7f", "ünïcødé ✓ \u2028\u2029", "bad\xffutf8\xc3"} {
		f := fakebroker.New()
		f.Tokens["svc"] = broker.Handout{AccessToken: sources.NewSecret(tok), Expiry: time.Now().Add(time.Hour)}
		w := serveHTTP(handler(t, f), "GET", "/v1/tokens/svc")
		var got struct {
			AccessToken string `json:"access_token"`
		}
		if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
			t.Fatalf("token %q: body is not JSON (%v): %s", tok, err, w.Body)
		}
		if want := strings.ToValidUTF8(tok, "\ufffd"); got.AccessToken != want {
			t.Errorf("token %q came back as %q, want %q", tok, got.AccessToken, want)
		}
	}
}

func TestUnknownCredential(t *testing.T) {
	e := wantError(t, serveHTTP(handler(t, fakebroker.New()), "GET", "/v1/tokens/nope"), http.StatusNotFound, "unknown_credential")
	if !strings.Contains(e.Description, `"nope"`) {
		t.Errorf("description %q does not name the credential", e.Description)
	}
}

func TestUnavailable(t *testing.T) {
	f := fakebroker.New()
	h := handler(t, f)
	for _, tc := range []struct {
		name       string
		retryAfter bool
	}{{"down", true}, {"pending", false}, {"rejected", false}} {
		t.Run(tc.name, func(t *testing.T) {
			w := serveHTTP(h, "GET", "/v1/tokens/"+tc.name)
			e := wantError(t, w, http.StatusServiceUnavailable, "token_unavailable")
			ue := f.Unavailable[tc.name]
			if !strings.Contains(e.Description, strconv.Quote(tc.name)) || !strings.Contains(e.Description, ue.Advice()) {
				t.Errorf("description %q does not name %q and give the advice %q", e.Description, tc.name, ue.Advice())
			}
			ra := w.Header().Get("Retry-After")
			if !tc.retryAfter {
				if ra != "" {
					t.Errorf("Retry-After = %q, want none", ra)
				}
				return
			}
			if secs, err := strconv.Atoi(ra); err != nil || secs < 89 || secs > 90 {
				t.Errorf("Retry-After = %q, want about 90", ra)
			}
		})
	}
}

func TestInvalidNames(t *testing.T) {
	long := strings.Repeat("a", 200)
	h := handler(t, fakebroker.New())
	for _, tc := range []struct{ desc, path string }{
		{"empty", "/v1/tokens/"},
		{"upper case", "/v1/tokens/A"},
		{"dot segments", "/v1/tokens/../x"},
		{"encoded dots", "/v1/tokens/%2e%2e"},
		{"encoded slash", "/v1/tokens/a%2Fb"},
		{"200 characters", "/v1/tokens/" + long},
		{"65 characters", "/v1/tokens/" + strings.Repeat("a", 65)},
		{"space", "/v1/tokens/a%20b"},
		{"unicode", "/v1/tokens/" + url.PathEscape("ünï")},
		{"quote", "/v1/tokens/%22x%22"},
		{"refresh with a bad name", "/v1/tokens/..%2F/refresh"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			method := "GET"
			if strings.HasSuffix(tc.path, "/refresh") {
				method = "POST"
			}
			w := serveHTTP(h, method, tc.path)
			e := wantError(t, w, http.StatusBadRequest, "invalid_name")
			if strings.Contains(e.Description, long[:40]) {
				t.Errorf("description echoes more than a short prefix: %q", e.Description)
			}
			if w.Body.Len() > 512 {
				t.Errorf("answer is %d bytes, want a short one", w.Body.Len())
			}
		})
	}
	// 64 characters is the limit, not past it.
	wantError(t, serveHTTP(h, "GET", "/v1/tokens/"+strings.Repeat("a", 64)), http.StatusNotFound, "unknown_credential")
}

func TestMethodNotAllowed(t *testing.T) {
	h := handler(t, fakebroker.New())
	for _, tc := range []struct{ method, path, allow string }{
		{"POST", "/v1/tokens/svc", "GET, HEAD"},
		{"DELETE", "/v1/tokens/svc", "GET, HEAD"},
		{"GET", "/v1/tokens/svc/refresh", "POST"},
		{"PUT", "/v1/credentials", "GET, HEAD"},
		{"POST", "/healthz", "GET, HEAD"},
	} {
		w := serveHTTP(h, tc.method, tc.path)
		wantError(t, w, http.StatusMethodNotAllowed, "method_not_allowed")
		if got := w.Header().Get("Allow"); got != tc.allow {
			t.Errorf("%s %s: Allow = %q, want %q", tc.method, tc.path, got, tc.allow)
		}
	}
}

func TestNotFound(t *testing.T) {
	h := handler(t, fakebroker.New())
	for _, p := range []string{"/", "/nope", "/v1", "/v1/tokens", "/v1/tokens/svc/other", "/v2/tokens/svc", "//healthz"} {
		e := wantError(t, serveHTTP(h, "GET", p), http.StatusNotFound, "not_found")
		if !slices.Contains(e.Endpoints, "GET /v1/tokens/{name}") || !strings.Contains(e.Description, "/v1/credentials") {
			t.Errorf("%s: answer does not list the endpoints: %+v", p, e)
		}
	}
}

func TestHealthz(t *testing.T) {
	h := api.NewServer(fakebroker.New(), api.Options{Logger: discard(), Version: "1.2.3"}).Handler()
	w := serveHTTP(h, "GET", "/healthz")
	if w.Code != 200 || strings.TrimSpace(w.Body.String()) != `{"status":"ok","version":"1.2.3"}` {
		t.Errorf("got %d %s, want 200 {\"status\":\"ok\",\"version\":\"1.2.3\"}", w.Code, w.Body)
	}
	w = serveHTTP(handler(t, fakebroker.New()), "GET", "/healthz")
	if w.Code != 200 || strings.TrimSpace(w.Body.String()) != `{"status":"ok"}` {
		t.Errorf("got %d %s, want 200 {\"status\":\"ok\"}", w.Code, w.Body)
	}
}

func TestCredentials(t *testing.T) {
	f := fakebroker.New()
	w := serveHTTP(handler(t, f), "GET", "/v1/credentials")
	if w.Code != 200 || w.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("got %d %q, want 200 application/json", w.Code, w.Header().Get("Content-Type"))
	}
	var got struct {
		Credentials []struct{ Name, State string } `json:"credentials"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
		t.Fatalf("body is not JSON (%v): %s", err, w.Body)
	}
	if len(got.Credentials) != 2 || got.Credentials[1].Name != "svc" || got.Credentials[1].State != string(broker.StateOK) {
		t.Errorf("credentials = %+v, want the fake's two", got.Credentials)
	}
	if strings.Contains(w.Body.String(), fakebroker.SecretToken) {
		t.Errorf("credentials hold the access token: %s", w.Body)
	}

	f.Statuses = nil
	w = serveHTTP(handler(t, f), "GET", "/v1/credentials")
	if strings.TrimSpace(w.Body.String()) != `{"credentials":[]}` {
		t.Errorf("no credentials: body %s, want an empty list", w.Body)
	}
}

func TestRefresh(t *testing.T) {
	f := fakebroker.New()
	h := handler(t, f)
	if w := serveHTTP(h, "POST", "/v1/tokens/svc/refresh"); w.Code != http.StatusNoContent || w.Body.Len() != 0 {
		t.Errorf("refresh svc: %d %s, want 204 and no body", w.Code, w.Body)
	}
	wantError(t, serveHTTP(h, "POST", "/v1/tokens/nope/refresh"), http.StatusNotFound, "unknown_credential")
	wantError(t, serveHTTP(h, "POST", "/v1/tokens/down/refresh"), http.StatusServiceUnavailable, "token_unavailable")
	e := wantError(t, serveHTTP(h, "POST", "/v1/tokens/flaky/refresh"), http.StatusBadGateway, "refresh_failed")
	if !strings.Contains(e.Description, `"flaky"`) || !strings.Contains(e.Description, "an HTML page") {
		t.Errorf("description %q does not say which credential failed and why", e.Description)
	}
	if want := []string{"svc", "nope", "down", "flaky"}; !slices.Equal(f.Refreshed(), want) {
		t.Errorf("refreshed %v, want %v", f.Refreshed(), want)
	}
	// A refresh the provider asked to defer is a 503 that says until when.
	w := serveHTTP(h, "POST", "/v1/tokens/waiting/refresh")
	e = wantError(t, w, http.StatusServiceUnavailable, "refresh_deferred")
	if ra, _ := strconv.Atoi(w.Header().Get("Retry-After")); ra < 3000 || !strings.Contains(e.Description, "Retry-After") {
		t.Errorf("deferred refresh: Retry-After %q, description %q; want about an hour, and the reason", w.Header().Get("Retry-After"), e.Description)
	}
}

func TestPanicRecovered(t *testing.T) {
	var logs bytes.Buffer
	h := api.NewServer(fakebroker.New(), api.Options{Logger: slog.New(slog.NewJSONHandler(&logs, nil))}).Handler()
	r := newRequest("GET", "/v1/tokens/panic")
	r.Header.Set("Authorization", "Bearer request-secret")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	wantError(t, w, http.StatusInternalServerError, "internal_error")
	if !strings.Contains(logs.String(), "handler panicked") || !strings.Contains(logs.String(), "/v1/tokens/panic") {
		t.Errorf("log does not report the panic and its path: %s", logs.String())
	}
	if strings.Contains(logs.String(), "request-secret") {
		t.Errorf("log holds the request's Authorization header: %s", logs.String())
	}
}

func TestAccessLog(t *testing.T) {
	var logs bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	h := api.NewServer(fakebroker.New(), api.Options{Logger: log}).Handler()
	serveHTTP(h, "GET", "/v1/tokens/svc")
	serveHTTP(h, "GET", "/v1/tokens/down")
	serveHTTP(h, "GET", "/v1/tokens/panic")
	var lines []map[string]any
	for l := range strings.Lines(logs.String()) {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line is not JSON: %s", l)
		}
		if m["msg"] == "request" {
			lines = append(lines, m)
		}
	}
	want := []struct {
		path   string
		status float64
	}{{"/v1/tokens/svc", 200}, {"/v1/tokens/down", 503}, {"/v1/tokens/panic", 500}}
	if len(lines) != len(want) {
		t.Fatalf("%d access log lines, want %d: %s", len(lines), len(want), logs.String())
	}
	for i, w := range want {
		l := lines[i]
		if l["level"] != "DEBUG" || l["method"] != "GET" || l["path"] != w.path || l["status"] != w.status || l["duration"] == nil {
			t.Errorf("access log line %d = %v, want DEBUG GET %s %v with a duration", i, l, w.path, w.status)
		}
	}
	if strings.Contains(logs.String(), fakebroker.SecretToken) {
		t.Errorf("the log holds the access token: %s", logs.String())
	}
}

// serve runs a server for b on a new socket until the test ends, and
// checks that it shut down cleanly.
func serve(t testing.TB, b api.Broker, path string) *api.Server {
	t.Helper()
	opts := api.Options{Path: path, Logger: discard()}
	l, err := api.Listen(opts)
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	s := api.NewServer(b, opts)
	done := make(chan error, 1)
	go func() { done <- s.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("Serve returned %v, want nil after Shutdown", err)
		}
	})
	return s
}

func TestShutdownRemovesSocket(t *testing.T) {
	p := tbtest.NewHome(t).Socket
	f := fakebroker.New()
	f.Block, f.Entered = make(chan struct{}), make(chan struct{}, 1)
	l, err := api.Listen(api.Options{Path: p})
	if err != nil {
		t.Fatal(err)
	}
	s := api.NewServer(f, api.Options{Logger: discard()})
	served := make(chan error, 1)
	go func() { served <- s.Serve(l) }()

	c := client.New(p)
	defer c.Close()
	got := make(chan error, 1)
	go func() {
		tok, err := c.Token(context.Background(), "svc")
		if err == nil && tok.AccessToken != fakebroker.SecretToken {
			err = fmt.Errorf("got token %q", tok.AccessToken)
		}
		got <- err
	}()
	<-f.Entered // a request is in flight

	shut := make(chan error, 1)
	go func() { shut <- s.Shutdown(context.Background()) }()
	tbtest.WaitFor(t, 5*time.Second, "the socket file to go", func() bool {
		_, err := os.Lstat(p)
		return errors.Is(err, os.ErrNotExist)
	})
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v while a request was in flight", err)
	default:
	}
	close(f.Block)
	if err := <-got; err != nil {
		t.Errorf("the request in flight failed: %v", err)
	}
	if err := <-shut; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if err := <-served; err != nil {
		t.Errorf("Serve returned %v, want nil", err)
	}
}

// countingSource issues tok-1, tok-2, ... each valid for an hour.
type countingSource struct{ n atomic.Int64 }

func (s *countingSource) Grant() sources.Grant { return sources.ClientCredentials }

func (s *countingSource) Spends(sources.Token) bool { return false }

func (s *countingSource) Token(context.Context, sources.Token) (sources.Token, error) {
	now := time.Now()
	return sources.Token{
		AccessToken: sources.NewSecret(fmt.Sprintf("real-token-%d", s.n.Add(1))),
		IssuedAt:    now,
		Expiry:      now.Add(time.Hour),
	}, nil
}

func TestRealBrokerOverSocket(t *testing.T) {
	store, err := file.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	b, err := broker.New(broker.Options{Store: store, Logger: discard()}, []broker.Credential{
		{Name: "svc", Provider: "test", Source: &countingSource{}, Fingerprint: "test svc"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })

	p := tbtest.NewHome(t).Socket
	serve(t, b, p)
	c := client.New(p)
	t.Cleanup(func() { c.Close() })
	ctx := context.Background()

	tok, err := c.Token(ctx, "svc")
	if err != nil {
		t.Fatalf("Token: %v", err)
	}
	if tok.AccessToken != "real-token-1" || tok.TokenType != "Bearer" || tok.ExpiresIn < 3590 || time.Until(tok.ExpiresAt) < 59*time.Minute {
		t.Errorf("Token = %q %q %d %v, want real-token-1 Bearer expiring in an hour", tok.AccessToken, tok.TokenType, tok.ExpiresIn, tok.ExpiresAt)
	}
	if err := c.Refresh(ctx, "svc"); err != nil {
		t.Fatalf("Refresh: %v", err)
	}
	// Whether a forced refresh of a fresh token asks the provider again is
	// the engine's decision; the API only has to hand out a valid token.
	if tok, err := c.Token(ctx, "svc"); err != nil || !strings.HasPrefix(tok.AccessToken, "real-token-") {
		t.Errorf("after Refresh: Token = %q, %v; want a real-token", tok.AccessToken, err)
	}
	st, err := c.Credentials(ctx)
	if err != nil {
		t.Fatalf("Credentials: %v", err)
	}
	if len(st) != 1 || st[0].Name != "svc" || st[0].State != "ok" || st[0].Grant != "client_credentials" || st[0].Generation == 0 {
		t.Errorf("Credentials = %+v, want svc ok client_credentials with a generation", st)
	}
	var ce *client.Error
	if _, err := c.Token(ctx, "nope"); !errors.As(err, &ce) || ce.Status != 404 || ce.Code != "unknown_credential" {
		t.Errorf("Token(nope) = %v, want a 404 unknown_credential *client.Error", err)
	}
}

// FuzzTokenPath sends arbitrary request targets through the handler, both
// as they would arrive on the socket and as a raw URL path.
func FuzzTokenPath(f *testing.F) {
	for _, p := range []string{
		"/v1/tokens/svc", "/v1/tokens/down", "/v1/tokens/pending", "/v1/tokens/nope", "/v1/tokens/",
		"/v1/tokens/../x", "/v1/tokens/%2e%2e", "/v1/tokens/a%2Fb", "/v1/tokens/svc/refresh",
		"/v1/tokens/" + strings.Repeat("a", 200), "/v1/tokens/ünï", "/v1/tokens/a b", "//v1/tokens/svc",
		"/v1/tokens/svc?x=1", "/v1/tokens/svc#f", "*", "http://h/v1/tokens/svc", "/v1/tokens/%zz",
		"/v1/tokens/" + fakebroker.SecretToken, "/v1/tokens/" + url.PathEscape(fakebroker.SecretToken), "/healthz", "/v1/credentials", "",
	} {
		f.Add(p, uint8(0))
	}
	f.Add("/v1/tokens/svc/refresh", uint8(2))
	h := handler(f, fakebroker.New())
	methods := []string{"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"}
	f.Fuzz(func(t *testing.T, target string, m uint8) {
		method := methods[int(m)%len(methods)]
		raw := method + " " + target + " HTTP/1.1\r\nHost: tokenbroker\r\n\r\n"
		if r, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw))); err == nil {
			checkFuzzAnswer(t, h, r)
		}
		r := (&http.Request{Method: method, URL: &url.URL{Path: target}, Host: "tokenbroker", Header: http.Header{},
			Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, Body: http.NoBody})
		checkFuzzAnswer(t, h, r)
	})
}

func checkFuzzAnswer(t *testing.T, h http.Handler, r *http.Request) {
	t.Helper()
	target := r.URL.String()
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	body := w.Body.Bytes()
	switch w.Code {
	case 200, 400, 404, 405, 503:
		if !json.Valid(body) {
			t.Fatalf("%s %q: %d answer is not JSON: %q", r.Method, target, w.Code, body)
		}
	case 204:
		if r.Method != "POST" || len(body) != 0 {
			t.Fatalf("%s %q: 204 with body %q", r.Method, target, body)
		}
	default:
		t.Fatalf("%s %q: status %d: %s", r.Method, target, w.Code, body)
	}
	handedOut := w.Code == 200 && r.PathValue("name") == "svc" // ServeMux set it on r
	if bytes.Contains(body, []byte(fakebroker.SecretToken)) && !handedOut {
		t.Fatalf("%s %q: %d answer holds the access token: %s", r.Method, target, w.Code, body)
	}
	if w.Code != 200 && len(body) > 1024 {
		t.Fatalf("%s %q: %d answer is %d bytes", r.Method, target, w.Code, len(body))
	}
}

// BenchmarkHandout measures the hot path: GET /v1/tokens/{name} through the
// whole handler (middleware, mux, broker call, encoding).
func BenchmarkHandout(b *testing.B) {
	h := handler(b, fakebroker.New())
	b.Run("recorder", func(b *testing.B) {
		r := newRequest("GET", "/v1/tokens/svc")
		b.ReportAllocs()
		for b.Loop() {
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != 200 {
				b.Fatalf("status %d", w.Code)
			}
		}
	})
	// A reused ResponseWriter, to show what the handler itself costs.
	b.Run("handler", func(b *testing.B) {
		r := newRequest("GET", "/v1/tokens/svc")
		w := &discardWriter{h: http.Header{}}
		b.ReportAllocs()
		for b.Loop() {
			clear(w.h)
			h.ServeHTTP(w, r)
			if w.status != 200 {
				b.Fatalf("status %d", w.status)
			}
		}
	})
	// Over a real socket with the client, keep-alive: what a service sees.
	b.Run("socket", func(b *testing.B) {
		p := tbtest.NewHome(b).Socket
		serve(b, fakebroker.New(), p)
		c := client.New(p)
		defer c.Close()
		ctx := context.Background()
		b.ReportAllocs()
		for b.Loop() {
			if _, err := c.Token(ctx, "svc"); err != nil {
				b.Fatal(err)
			}
		}
	})
}

type discardWriter struct {
	h      http.Header
	status int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) WriteHeader(code int)        { w.status = code }
func (w *discardWriter) Write(p []byte) (int, error) { return io.Discard.Write(p) }
