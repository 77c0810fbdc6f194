package api_test

// The proxy over a real socket, to a real upstream that checks the bearer
// token: what it forwards, what it refuses, and how it answers a 401.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/internal/tbtest"
	"github.com/tokenbroker/tokenbroker/internal/tbtest/fakebroker"

	"github.com/tokenbroker/tokenbroker/api"
	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/sources"
)

// rotatingBroker hands out one token for "svc" and "other", and a new one
// for svc on each Refresh. "plain" is a credential without an upstream;
// "down" has an upstream but no token.
type rotatingBroker struct {
	mu        sync.Mutex
	gen       int
	refreshes int
}

func (b *rotatingBroker) tok() string { return fmt.Sprintf("tok-%d-%s", b.gen, fakebroker.SecretToken) }

func (b *rotatingBroker) current() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.tok()
}

func (b *rotatingBroker) Token(_ context.Context, name string) (broker.Handout, error) {
	switch name {
	case "svc", "other", "plain":
		return broker.Handout{AccessToken: sources.NewSecret(b.current()), Expiry: time.Now().Add(time.Hour)}, nil
	case "down":
		return broker.Handout{}, &broker.UnavailableError{Name: name, State: broker.StatePending}
	}
	return broker.Handout{}, fmt.Errorf("%w %q", broker.ErrUnknownCredential, name)
}

func (b *rotatingBroker) refreshCount() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.refreshes
}

func (b *rotatingBroker) Refresh(context.Context, string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.gen++
	b.refreshes++
	return nil
}

func (b *rotatingBroker) Status() []broker.Status {
	var out []broker.Status
	for _, n := range []string{"down", "other", "plain", "svc"} {
		out = append(out, broker.Status{Name: n, Provider: "generic"})
	}
	return out
}

func (b *rotatingBroker) BeginAuthorization(string) (broker.AuthRequest, error) {
	return broker.AuthRequest{}, broker.ErrNotAuthorizable
}

func (b *rotatingBroker) CompleteAuthorization(context.Context, string, string, string) (broker.Status, error) {
	return broker.Status{}, broker.ErrNotAuthorizable
}

// seen is one request as the upstream received it.
type seen struct {
	method, uri, host string
	header            http.Header
	bodyLen           int
	bodySum           string
}

// upstream is an API that accepts only the broker's current token
// (refused holds tokens it answers 401 to), and records what reached it.
type upstream struct {
	*httptest.Server
	b         *rotatingBroker
	mu        sync.Mutex
	got       []seen
	refused   map[string]bool
	elsewhere *httptest.Server // a redirect target that must never be reached
	hits      int              // requests that reached elsewhere
}

func newUpstream(t *testing.T, b *rotatingBroker) *upstream {
	u := &upstream{b: b, refused: map[string]bool{}}
	u.elsewhere = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.hits++
		u.mu.Unlock()
	}))
	t.Cleanup(u.elsewhere.Close)
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		n, _ := io.Copy(h, r.Body)
		tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		u.mu.Lock()
		u.got = append(u.got, seen{r.Method, r.RequestURI, r.Host, r.Header.Clone(), int(n), hex.EncodeToString(h.Sum(nil))})
		refused := u.refused[tok] || tok != b.current()
		u.mu.Unlock()
		if refused {
			w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
			http.Error(w, "invalid token", http.StatusUnauthorized)
			return
		}
		switch {
		case strings.HasSuffix(r.URL.Path, "/redirect"):
			http.Redirect(w, r, u.elsewhere.URL+"/steal", http.StatusFound)
		case strings.HasSuffix(r.URL.Path, "/echo"):
			w.Header().Set("X-Echo", r.Header.Get("Authorization"))
			w.Header().Set("Connection", "X-Hop")
			w.Header().Set("X-Hop", "1")
			fmt.Fprint(w, "echoed")
		case strings.HasSuffix(r.URL.Path, "/download"):
			size, _ := strconv.Atoi(r.URL.Query().Get("size"))
			w.Header().Set("Content-Type", "application/octet-stream")
			_, _ = io.CopyN(w, zeros{}, int64(size))
		default:
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"len":%d,"sum":%q}`, n, hex.EncodeToString(h.Sum(nil)))
		}
	}))
	t.Cleanup(u.Close)
	return u
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

func (u *upstream) requests() []seen {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]seen(nil), u.got...)
}

// proxyServer serves b's API with svc and down proxied to u under /base,
// and returns the socket's path.
func proxyServer(t *testing.T, b api.Broker, u *upstream, metrics *api.Metrics) string {
	t.Helper()
	target, err := api.ParseUpstream(u.URL + "/base/")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(tbtest.ShortDir(t), "tb.sock")
	opts := api.Options{Path: path, Logger: discard(), Metrics: metrics, Upstreams: map[string]api.Upstream{
		"svc":  {URL: target},
		"down": {URL: target},
	}}
	l, err := api.Listen(opts)
	if err != nil {
		t.Fatal(err)
	}
	srv := api.NewServer(b, opts)
	go srv.Serve(l)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
	return path
}

// overSocket is an HTTP client that reaches the socket whatever the URL.
func overSocket(path string) *http.Client {
	return &http.Client{
		Timeout: 20 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", path)
		}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

func proxyDo(t *testing.T, c *http.Client, method, target string, body io.Reader, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, "http://tokenbroker"+target, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Tokenbroker", "1")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, target, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the answer: %v", method, target, err)
	}
	return resp, b
}

// A request through the proxy reaches the upstream under its prefix, with
// the query, method and body, the broker's token and none of the caller's
// credentials, forwarding or hop-by-hop headers; the answer comes back.
func TestProxyForwards(t *testing.T) {
	b := &rotatingBroker{}
	u := newUpstream(t, b)
	m := api.NewMetrics(api.MetricsOptions{})
	c := overSocket(proxyServer(t, b, u, m))

	resp, body := proxyDo(t, c, "POST", "/v1/proxy/svc/v2/items/a%20b;v=1?x=1&y=%2F", strings.NewReader("hello"),
		"Authorization", "Bearer callers-own", "X-Forwarded-Host", "evil.example", "X-Forwarded-For", "10.0.0.1",
		"Forwarded", "host=evil.example", "Connection", "X-Secret-Hop", "X-Secret-Hop", "1", "X-Keep", "kept",
		"Cookie", "a=b")
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"len":5`) {
		t.Fatalf("answer %d %s; want 200 with the body's length 5", resp.StatusCode, body)
	}
	got := u.requests()
	if len(got) != 1 {
		t.Fatalf("the upstream got %d requests, want 1", len(got))
	}
	r := got[0]
	if r.method != "POST" || r.uri != "/base/v2/items/a%20b;v=1?x=1&y=%2F" {
		t.Errorf("the upstream got %s %s; want POST /base/v2/items/a%%20b;v=1?x=1&y=%%2F", r.method, r.uri)
	}
	if want := strings.TrimPrefix(u.URL, "http://"); r.host != want {
		t.Errorf("the upstream got Host %q, want its own %q", r.host, want)
	}
	if a := r.header.Values("Authorization"); len(a) != 1 || a[0] != "Bearer "+b.current() {
		t.Errorf("the upstream got Authorization %q; want only the broker's token", a)
	}
	for _, h := range []string{"X-Forwarded-Host", "X-Forwarded-For", "X-Forwarded-Proto", "Forwarded", "X-Secret-Hop", "X-Tokenbroker"} {
		if v := r.header.Values(h); len(v) > 0 {
			t.Errorf("the upstream got %s: %q; want it dropped", h, v)
		}
	}
	if r.header.Get("X-Keep") != "kept" || r.header.Get("Cookie") != "a=b" {
		t.Errorf("the upstream lost the caller's own headers: %v", r.header)
	}

	// Every method, and the path without anything after the name.
	for _, method := range []string{"GET", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"} {
		if resp, _ := proxyDo(t, c, method, "/v1/proxy/svc", nil); resp.StatusCode != 200 {
			t.Errorf("%s /v1/proxy/svc: %d, want 200", method, resp.StatusCode)
		}
	}
	if uri := u.requests()[len(u.requests())-1].uri; uri != "/base" {
		t.Errorf("/v1/proxy/svc reached %s, want /base", uri)
	}
	proxyDo(t, c, "GET", "/v1/proxy/svc/", nil)
	if uri := u.requests()[len(u.requests())-1].uri; uri != "/base/" {
		t.Errorf("/v1/proxy/svc/ reached %s, want /base/", uri)
	}

	// An answer header that repeats the token is dropped, and so are the
	// upstream's hop-by-hop ones.
	resp, body = proxyDo(t, c, "GET", "/v1/proxy/svc/echo", nil)
	if resp.StatusCode != 200 || string(body) != "echoed" {
		t.Fatalf("echo: %d %s", resp.StatusCode, body)
	}
	for k, vs := range resp.Header {
		for _, v := range vs {
			if strings.Contains(v, fakebroker.SecretToken) {
				t.Errorf("the proxied answer's header %s holds the token", k)
			}
		}
	}
	if resp.Header.Get("X-Hop") != "" {
		t.Errorf("the upstream's hop-by-hop header X-Hop came through")
	}

	// A redirect elsewhere is passed on as it is, never followed.
	resp, _ = proxyDo(t, c, "GET", "/v1/proxy/svc/redirect", nil)
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != u.elsewhere.URL+"/steal" {
		t.Errorf("redirect: %d Location %q; want 302 to %s/steal passed on", resp.StatusCode, resp.Header.Get("Location"), u.elsewhere.URL)
	}
	u.mu.Lock()
	hits := u.hits
	u.mu.Unlock()
	if hits != 0 {
		t.Errorf("the redirect target got %d requests; the proxy must not follow redirects", hits)
	}

	proxyMetricsHave(t, m, `tokenbroker_proxy_requests_total{class="2xx",credential="svc"} `,
		`tokenbroker_proxy_requests_total{class="3xx",credential="svc"} 1`)
}

// Large bodies stream both ways.
func TestProxyStreams(t *testing.T) {
	b := &rotatingBroker{}
	u := newUpstream(t, b)
	c := overSocket(proxyServer(t, b, u, nil))
	const size = 32 << 20
	h := sha256.New()
	resp, body := proxyDo(t, c, "PUT", "/v1/proxy/svc/upload", io.TeeReader(io.LimitReader(zeros{}, size), h))
	if want := fmt.Sprintf(`{"len":%d,"sum":%q}`, size, hex.EncodeToString(h.Sum(nil))); resp.StatusCode != 200 || string(body) != want {
		t.Errorf("upload: %d %s; want 200 %s", resp.StatusCode, body, want)
	}
	resp, body = proxyDo(t, c, "GET", "/v1/proxy/svc/download?size="+strconv.Itoa(size), nil)
	if resp.StatusCode != 200 || len(body) != size {
		t.Errorf("download: %d, %d bytes; want 200, %d bytes", resp.StatusCode, len(body), size)
	}
}

// A 401 gets one forced refresh and one retry with the fresh token when the
// body can be sent again, and the upstream's 401 otherwise.
func TestProxyRetriesOn401(t *testing.T) {
	b := &rotatingBroker{}
	u := newUpstream(t, b)
	m := api.NewMetrics(api.MetricsOptions{})
	c := overSocket(proxyServer(t, b, u, m))

	u.mu.Lock()
	u.refused[b.current()] = true // revoked at the provider, unknown to the broker
	u.mu.Unlock()
	resp, body := proxyDo(t, c, "POST", "/v1/proxy/svc/items", strings.NewReader(`{"a":1}`))
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"len":7`) {
		t.Fatalf("after a 401: %d %s; want 200 from the retry, with the whole body", resp.StatusCode, body)
	}
	if n := b.refreshCount(); n != 1 {
		t.Errorf("%d forced refreshes, want 1", n)
	}
	got := u.requests()
	if len(got) != 2 || got[0].bodySum != got[1].bodySum || got[1].header.Get("Authorization") != "Bearer "+b.current() {
		t.Errorf("the upstream got %d requests; want the refused one and its retry with the same body and the new token", len(got))
	}
	proxyMetricsHave(t, m, `tokenbroker_proxy_retries_total{credential="svc"} 1`)

	// Within the refresh cooldown, a second revoked token is not refreshed
	// again: the caller gets the upstream's 401.
	u.mu.Lock()
	u.refused[b.current()] = true
	u.mu.Unlock()
	resp, _ = proxyDo(t, c, "GET", "/v1/proxy/svc/items", nil)
	if n := b.refreshCount(); resp.StatusCode != 401 || resp.Header.Get("WWW-Authenticate") == "" || n != 1 {
		t.Errorf("a 401 within the cooldown: %d, %d refreshes; want the upstream's 401 and no second refresh", resp.StatusCode, n)
	}

	// A body too large to keep is streamed and not retried.
	b2 := &rotatingBroker{}
	u2 := newUpstream(t, b2)
	c2 := overSocket(proxyServer(t, b2, u2, nil))
	u2.mu.Lock()
	u2.refused[b2.current()] = true
	u2.mu.Unlock()
	resp, _ = proxyDo(t, c2, "POST", "/v1/proxy/svc/items", io.LimitReader(zeros{}, 1<<20))
	if resp.StatusCode != 401 || len(u2.requests()) != 1 {
		t.Errorf("a 401 to a 1 MiB body: %d after %d upstream requests; want the 401 and no retry", resp.StatusCode, len(u2.requests()))
	}
}

// Answers the proxy gives itself: JSON errors naming the credential and,
// where the operator must act, the variable.
func TestProxyErrors(t *testing.T) {
	b := &rotatingBroker{}
	u := newUpstream(t, b)
	path := proxyServer(t, b, u, nil)
	c := overSocket(path)
	for _, tc := range []struct {
		target, header string
		status         int
		code, says     string
	}{
		{"/v1/proxy/nope/x", "1", 404, "unknown_credential", `nope`},
		{"/v1/proxy/plain/x", "1", 404, "no_upstream", "TOKENBROKER_PLAIN_UPSTREAM"},
		{"/v1/proxy/Bad!/x", "1", 400, "invalid_name", "valid credential name"},
		{"/v1/proxy/down/x", "1", 503, "token_unavailable", `down`},
		{"/v1/proxy/svc/x", "", 400, "header_required", "X-Tokenbroker"},
	} {
		req, _ := http.NewRequest("GET", "http://tokenbroker"+tc.target, nil)
		if tc.header != "" {
			req.Header.Set("X-Tokenbroker", tc.header)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err := checkErrorAnswer(resp, body, tc.status, tc.code); err != nil || !strings.Contains(string(body), tc.says) {
			t.Errorf("%s: %v; want it to say %s: %s", tc.target, err, tc.says, body)
		}
	}
	if n := len(u.requests()); n != 0 {
		t.Errorf("the upstream got %d requests; none of these may reach it", n)
	}

	// An upstream that does not answer: 502, naming the variable.
	dead, err := api.ParseUpstream("http://127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }))
	defer slow.Close()
	slowURL, _ := api.ParseUpstream(slow.URL)
	p2 := filepath.Join(tbtest.ShortDir(t), "tb.sock")
	opts := api.Options{Path: p2, Logger: discard(), Upstreams: map[string]api.Upstream{
		"svc": {URL: dead}, "other": {URL: slowURL, HeaderTimeout: 100 * time.Millisecond},
	}}
	l, err := api.Listen(opts)
	if err != nil {
		t.Fatal(err)
	}
	srv := api.NewServer(b, opts)
	go srv.Serve(l)
	defer srv.Shutdown(context.Background())
	resp, body := proxyDo(t, overSocket(p2), "GET", "/v1/proxy/svc/x", nil)
	if err := checkErrorAnswer(resp, body, 502, "upstream_unreachable"); err != nil || !strings.Contains(string(body), "TOKENBROKER_SVC_UPSTREAM") {
		t.Errorf("dead upstream: %v: %s", err, body)
	}
	resp, body = proxyDo(t, overSocket(p2), "GET", "/v1/proxy/other/x", nil)
	if err := checkErrorAnswer(resp, body, 504, "upstream_timeout"); err != nil {
		t.Errorf("silent upstream: %v", err)
	}

	// A stream that outlasts the whole exchange's bound is cut: the caller
	// sees a broken answer, not a whole one.
	dripping := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1000")
		for range 1000 {
			if _, err := w.Write([]byte("x")); err != nil {
				return
			}
			http.NewResponseController(w).Flush()
			select {
			case <-r.Context().Done():
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}))
	defer dripping.Close()
	dripURL, _ := api.ParseUpstream(dripping.URL)
	p3 := filepath.Join(tbtest.ShortDir(t), "tb.sock")
	opts = api.Options{Path: p3, Logger: discard(), Upstreams: map[string]api.Upstream{"svc": {URL: dripURL, MaxDuration: 300 * time.Millisecond}}}
	l, err = api.Listen(opts)
	if err != nil {
		t.Fatal(err)
	}
	srv3 := api.NewServer(b, opts)
	go srv3.Serve(l)
	defer srv3.Shutdown(context.Background())
	req, _ := http.NewRequest("GET", "http://tokenbroker/v1/proxy/svc/drip", nil)
	req.Header.Set("X-Tokenbroker", "1")
	resp, err = overSocket(p3).Do(req)
	if err != nil {
		t.Fatalf("the answer's beginning should have come through before the cut: %v", err)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err == nil || n == 0 || n >= 1000 {
		t.Errorf("a 10 s stream with a 300 ms bound: read %d bytes, err %v; want its beginning, then an error", n, err)
	}
}

// Requests that try to reach another host or path than the configured
// upstream's, or to smuggle one request inside another, never reach
// anything but the upstream's prefix, and never another server.
func TestProxyAbuse(t *testing.T) {
	b := &rotatingBroker{}
	u := newUpstream(t, b)
	path := proxyServer(t, b, u, nil)
	upHost := strings.TrimPrefix(u.URL, "http://")
	for _, tc := range []struct {
		name, raw string
		status    int // 0: any answer that is not a success
	}{
		{"dot-dot", "GET /v1/proxy/svc/../../tokens/svc HTTP/1.1\r\n", 404},
		{"encoded dot-dot", "GET /v1/proxy/svc/%2e%2e/%2E%2E/x HTTP/1.1\r\n", 400},
		{"half-encoded dot-dot", "GET /v1/proxy/svc/.%2e/x HTTP/1.1\r\n", 400},
		{"double-encoded dot-dot", "GET /v1/proxy/svc/%252e%252e/x HTTP/1.1\r\n", 400},
		{"encoded slash", "GET /v1/proxy/svc/a%2f..%2f..%2fx HTTP/1.1\r\n", 400},
		{"double-encoded slash", "GET /v1/proxy/svc/a%252f..%252fx HTTP/1.1\r\n", 400},
		{"encoded backslash", "GET /v1/proxy/svc/..%5cx HTTP/1.1\r\n", 400},
		{"backslash", "GET /v1/proxy/svc/..\\x HTTP/1.1\r\n", 400},
		{"encoded NUL", "GET /v1/proxy/svc/a%00b HTTP/1.1\r\n", 400},
		{"doubled slash", "GET /v1/proxy/svc//x HTTP/1.1\r\n", 404},
		{"encoded name", "GET /v1/proxy/sv%63/x HTTP/1.1\r\n", 400},
		{"absolute-form elsewhere", "GET http://evil.example/v1/proxy/svc/x HTTP/1.1\r\n", 400},
		{"absolute-form upstream", "GET " + u.URL + "/v1/proxy/svc/x HTTP/1.1\r\n", 400},
		{"CONNECT", "CONNECT evil.example:443 HTTP/1.1\r\n", 0},
		{"TRACE", "TRACE /v1/proxy/svc/x HTTP/1.1\r\n", 405},
		{"two lengths", "POST /v1/proxy/svc/x HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 40\r\n", 400},
		{"space before colon", "GET /v1/proxy/svc/x HTTP/1.1\r\nTransfer-Encoding : chunked\r\n", 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(u.requests())
			c := dialRaw(t, path)
			method, _, _ := strings.Cut(tc.raw, " ")
			resp, body, err := c.send(tc.raw+"Host: tokenbroker\r\nX-Tokenbroker: 1\r\n\r\n", method)
			if err != nil {
				t.Fatalf("no answer: %v", err)
			}
			if tc.status != 0 && resp.StatusCode != tc.status || resp.StatusCode < 300 {
				t.Errorf("answer %d %s; want %d", resp.StatusCode, body, tc.status)
			}
			if n := len(u.requests()) - before; n != 0 {
				t.Errorf("%d requests reached the upstream: %+v", n, u.requests()[before:])
			}
		})
	}

	// The caller's Host and forwarding headers choose nothing.
	c := dialRaw(t, path)
	resp, body, err := c.send("GET /v1/proxy/svc/h HTTP/1.1\r\nHost: evil.example\r\nX-Forwarded-Host: evil.example\r\n"+
		"X-Forwarded-Proto: https\r\nX-Original-URL: /admin\r\nX-Tokenbroker: 1\r\n\r\n", "GET")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("Host game: %v %v %s", err, resp, body)
	}
	last := u.requests()[len(u.requests())-1]
	if last.host != upHost || last.uri != "/base/h" || last.header.Get("X-Forwarded-Host") != "" || last.header.Get("X-Original-Url") != "" {
		t.Errorf("Host game: the upstream got Host %q URI %q headers %v; want its own host, /base/h, no forwarding headers", last.host, last.uri, last.header)
	}

	// Smuggling: a request hidden in a body, by Content-Length against
	// Transfer-Encoding, reaches the upstream only as body bytes, if at all.
	smuggled := "GET /admin HTTP/1.1\r\nHost: " + upHost + "\r\n\r\n"
	chunk := fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(smuggled), smuggled)
	before := len(u.requests())
	c = dialRaw(t, path)
	_, _, _ = c.send("POST /v1/proxy/svc/s HTTP/1.1\r\nHost: tokenbroker\r\nX-Tokenbroker: 1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"+chunk, "POST")
	c = dialRaw(t, path)
	_, _, _ = c.send("POST /v1/proxy/svc/s HTTP/1.1\r\nHost: tokenbroker\r\nX-Tokenbroker: 1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n"+chunk, "POST")
	if n := len(u.requests()) - before; n > 2 {
		t.Errorf("two smuggling attempts made %d upstream requests; want at most one each", n)
	}
	for _, r := range u.requests() {
		if !strings.HasPrefix(r.uri, "/base/") && r.uri != "/base" {
			t.Errorf("the upstream got %s %s, outside the prefix", r.method, r.uri)
		}
	}

	// An Upgrade is not passed on: an upgraded connection would escape
	// every bound.
	c = dialRaw(t, path)
	resp, _, err = c.send("GET /v1/proxy/svc/ws HTTP/1.1\r\nHost: tokenbroker\r\nX-Tokenbroker: 1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", "GET")
	if err != nil || resp.StatusCode == http.StatusSwitchingProtocols {
		t.Errorf("upgrade: %v %v", err, resp)
	}
	if last := u.requests()[len(u.requests())-1]; last.header.Get("Upgrade") != "" {
		t.Errorf("the upstream got Upgrade: %q", last.header.Get("Upgrade"))
	}
}

func TestParseUpstream(t *testing.T) {
	for _, tc := range []struct{ in, want, err string }{
		{"https://api.example.com", "https://api.example.com", ""},
		{"https://api.example.com/v2/", "https://api.example.com/v2", ""},
		{"http://127.0.0.1:8080/x", "http://127.0.0.1:8080/x", ""},
		{"http://localhost:8080", "http://localhost:8080", ""},
		{"http://[::1]:8080", "http://[::1]:8080", ""},
		{"http://api.example.com", "", "in clear"},
		{"ftp://api.example.com", "", "https"},
		{"https://user:pw@api.example.com", "", "user"},
		{"https://api.example.com/?a=1", "", "query"},
		{"https://api.example.com/#x", "", "fragment"},
		{"https:///x", "", "host"},
		{"https://api.example.com/a/%2e%2e", "", "dot segment"},
		{"api.example.com", "", "https"},
	} {
		u, err := api.ParseUpstream(tc.in)
		switch {
		case tc.err == "" && (err != nil || u.String() != tc.want):
			t.Errorf("ParseUpstream(%q) = %v, %v; want %s", tc.in, u, err, tc.want)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("ParseUpstream(%q) = %v, %v; want an error saying %q", tc.in, u, err, tc.err)
		}
	}
}

// proxyMetricsHave waits until m shows every line of want: a request is
// counted once the handler returns, which may be after its caller has read
// the whole answer.
func proxyMetricsHave(t *testing.T, m *api.Metrics, want ...string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		text := scrapeProxy(t, m)
		missing := slices.DeleteFunc(slices.Clone(want), func(w string) bool { return strings.Contains(text, w) })
		if len(missing) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("/metrics lacks %q:\n%s", missing, text)
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func scrapeProxy(t *testing.T, m *api.Metrics) string {
	t.Helper()
	w := httptest.NewRecorder()
	m.Handler().ServeHTTP(w, httptest.NewRequest("GET", "/metrics", nil))
	if strings.Contains(w.Body.String(), fakebroker.SecretToken) {
		t.Error("/metrics holds the token")
	}
	return w.Body.String()
}

// The proxy obeys the credential's allow list, by the kernel's account of
// the caller (setpriv), before anything reaches the upstream.
func TestProxyAccessByPeerCredentials(t *testing.T) {
	setpriv, dir, bin := clientAsOthers(t)
	b := &rotatingBroker{}
	u := newUpstream(t, b)
	target, _ := api.ParseUpstream(u.URL)
	sock := filepath.Join(dir, "tb.sock")
	opts := api.Options{Path: sock, Mode: 0o666, Logger: discard(),
		Access:    map[string]api.Access{"svc": {Set: true, UIDs: []uint32{1234}}},
		Upstreams: map[string]api.Upstream{"svc": {URL: target}}}
	l, err := api.Listen(opts)
	if err != nil {
		t.Fatal(err)
	}
	srv := api.NewServer(b, opts)
	go srv.Serve(l)
	t.Cleanup(func() { _ = srv.Shutdown(t.Context()) })
	for _, c := range []struct {
		uid  string
		want int
	}{{"1113", 403}, {"1234", 200}} {
		cmd := exec.Command(setpriv, "--reuid="+c.uid, "--regid="+c.uid, "--clear-groups", bin)
		cmd.Env = []string{asClientEnv + "=svc", asClientSocket + "=" + sock, asClientPath + "=/v1/proxy/svc/x"}
		before := len(u.requests())
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("client as uid %s: %v\n%s", c.uid, err, out)
		}
		if !strings.HasPrefix(string(out), fmt.Sprintf("HTTP/1.1 %d ", c.want)) {
			t.Errorf("uid %s: got\n%s\nwant %d", c.uid, out, c.want)
		}
		if n, want := len(u.requests())-before, map[int]int{403: 0, 200: 1}[c.want]; n != want {
			t.Errorf("uid %s: %d requests reached the upstream, want %d", c.uid, n, want)
		}
	}
}
