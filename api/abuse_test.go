package api_test

// Abuse tests: real connections to a real socket that misbehave (unknown
// routes, huge headers, silent or slow clients, idle connections by the
// hundred, floods, shutdowns mid-request), each checking that the server
// stays bounded and keeps answering everyone else.
//
// Tests that check for leaked goroutines with goleak run serially: a
// parallel test's goroutines would look like leaks. The two tests that must
// wait out a server timeout (api.Options has no way to shorten them) run in
// parallel, after the serial ones.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tokenbroker/tokenbroker/api"
	"github.com/tokenbroker/tokenbroker/api/client"
	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/internal/tbtest"
	"github.com/tokenbroker/tokenbroker/internal/tbtest/fakebroker"
)

// abuseBroker is the fake broker with call counters, and a gate: a handout
// of "slow" waits until release is closed (or its request ends), then hands
// out svc's token.
type abuseBroker struct {
	*fakebroker.Broker
	tokenCalls, refreshCalls, statusCalls atomic.Int64

	entered     chan struct{} // one value per "slow" handout that is waiting
	release     chan struct{}
	releaseOnce sync.Once
}

func newAbuseBroker(t *testing.T) *abuseBroker {
	b := &abuseBroker{Broker: fakebroker.New(), entered: make(chan struct{}, 64), release: make(chan struct{})}
	// Whatever happens, nothing stays blocked in the fake after the test.
	t.Cleanup(b.releaseAll)
	return b
}

func (b *abuseBroker) releaseAll() { b.releaseOnce.Do(func() { close(b.release) }) }

func (b *abuseBroker) Token(ctx context.Context, name string) (broker.Handout, error) {
	b.tokenCalls.Add(1)
	if name == "slow" {
		b.entered <- struct{}{}
		select {
		case <-b.release:
		case <-ctx.Done():
			return broker.Handout{}, ctx.Err()
		}
		name = "svc"
	}
	return b.Broker.Token(ctx, name)
}

func (b *abuseBroker) Refresh(ctx context.Context, name string) error {
	b.refreshCalls.Add(1)
	return b.Broker.Refresh(ctx, name)
}

func (b *abuseBroker) Status() []broker.Status {
	b.statusCalls.Add(1)
	return b.Broker.Status()
}

// liveServer is a server on a real socket that a test can shut down itself
// (serve shuts down only at the end of the test, too late for goleak).
type liveServer struct {
	path   string
	srv    *api.Server
	served chan error
	once   sync.Once
}

func startServer(t *testing.T, b api.Broker) *liveServer {
	t.Helper()
	ls := &liveServer{path: tbtest.NewHome(t).Socket, served: make(chan error, 1)}
	opts := api.Options{Path: ls.path, Logger: discard()}
	l, err := api.Listen(opts)
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	ls.srv = api.NewServer(b, opts)
	go func() { ls.served <- ls.srv.Serve(l) }()
	t.Cleanup(func() { ls.stop(t) })
	return ls
}

// stop shuts the server down, once, and checks that it went cleanly.
func (ls *liveServer) stop(t *testing.T) {
	t.Helper()
	ls.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := ls.srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		ls.checkServed(t)
	})
}

// checkServed checks that Serve returned nil after a shutdown.
func (ls *liveServer) checkServed(t *testing.T) {
	t.Helper()
	select {
	case err := <-ls.served:
		if err != nil {
			t.Errorf("Serve returned %v, want nil after Shutdown", err)
		}
	case <-time.After(5 * time.Second):
		t.Errorf("Serve has not returned 5 s after Shutdown")
	}
}

// rawConn is a client connection that speaks HTTP/1.1 by hand.
type rawConn struct {
	net.Conn
	br *bufio.Reader
}

func dialRaw(t *testing.T, path string) *rawConn {
	t.Helper()
	c, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", path, err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawConn{Conn: c, br: bufio.NewReader(c)}
}

// request is a request as the client library sends it (with its marker
// header), plus extra header lines (each ending in CRLF).
func request(method, target, headers string) string {
	return method + " " + target + " HTTP/1.1\r\nHost: tokenbroker\r\n" + client.Header + ": 1\r\n" + headers + "\r\n"
}

// openFDs counts the process's open file descriptors, or returns -1 where
// /proc/self/fd is missing.
func openFDs() int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	return len(ents)
}

// waitFDs waits until the process holds no more descriptors than base.
func waitFDs(t *testing.T, base int) {
	t.Helper()
	if base < 0 {
		return
	}
	deadline := time.Now().Add(5 * time.Second)
	for openFDs() > base {
		if time.Now().After(deadline) {
			t.Errorf("%d file descriptors open, want at most %d as before", openFDs(), base)
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// send writes raw and reads one answer to a request with method.
func (c *rawConn) send(raw, method string) (*http.Response, []byte, error) {
	if err := c.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		return nil, nil, err
	}
	if _, err := io.WriteString(c, raw); err != nil {
		return nil, nil, fmt.Errorf("write: %w", err)
	}
	return c.read(method)
}

// read reads one answer to a request with method, and its whole body.
func (c *rawConn) read(method string) (*http.Response, []byte, error) {
	if err := c.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		return nil, nil, err
	}
	resp, err := http.ReadResponse(c.br, &http.Request{Method: method})
	if err != nil {
		return nil, nil, fmt.Errorf("read answer: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp, body, err
}

// closedByServer reads c until the server hangs up, at most within. It
// returns whatever the server sent first, and an error when the connection
// is still open after within (or failed otherwise).
func (c *rawConn) closedByServer(within time.Duration) ([]byte, error) {
	if err := c.SetReadDeadline(time.Now().Add(within)); err != nil {
		return nil, err
	}
	var got []byte
	buf := make([]byte, 4096)
	for {
		n, err := c.br.Read(buf)
		if len(got) < 64<<10 {
			got = append(got, buf[:n]...)
		}
		switch {
		case err == nil:
		case errors.Is(err, io.EOF), errors.Is(err, syscall.ECONNRESET):
			return got, nil
		case errors.Is(err, os.ErrDeadlineExceeded):
			return got, fmt.Errorf("the server has not closed the connection %v later", within)
		default:
			return got, err
		}
	}
}

// checkErrorAnswer checks an error answer's status, headers and JSON shape
// as wantError does for a recorder.
func checkErrorAnswer(resp *http.Response, body []byte, status int, code string) error {
	if resp.StatusCode != status {
		return fmt.Errorf("status %d, want %d; body %s", resp.StatusCode, status, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		return fmt.Errorf("Content-Type %q, want application/json; body %s", ct, body)
	}
	if strings.Contains(string(body), fakebroker.SecretToken) {
		return fmt.Errorf("error answer holds the access token: %s", body)
	}
	var e errorBody
	if err := json.Unmarshal(body, &e); err != nil {
		return fmt.Errorf("body is not JSON (%v): %s", err, body)
	}
	if e.Error != code || e.Description == "" {
		return fmt.Errorf("error %q with description %q, want %q with a description", e.Error, e.Description, code)
	}
	return nil
}

// noLeaks is goleak.VerifyNone with a longer grace: net/http lingers half a
// second on a connection it refused (431), and goleak's own retries last
// about that long.
func noLeaks(t *testing.T, opts ...goleak.Option) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for goleak.Find(opts...) != nil && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	goleak.VerifyNone(t, opts...)
}

// TestAbuseErrorsKeepTheConnection sends, on one connection, requests that
// only a real socket can carry (extension methods, absolute-form targets,
// HEAD, a body that holds a whole second request), and checks each gets the
// JSON 404 or 405, and the connection stays in step for the next. The
// handler-level tests (TestMethodNotAllowed, TestNotFound) cover the routes
// themselves.
func TestAbuseErrorsKeepTheConnection(t *testing.T) {
	b := newAbuseBroker(t)
	ls := startServer(t, b)
	c := dialRaw(t, ls.path)

	smuggled := request("GET", "/v1/tokens/svc", "")
	for _, tc := range []struct {
		desc, raw, method string
		status            int
		code, allow       string
	}{
		{"extension method", request("BREW", "/v1/tokens/svc", ""), "BREW", 405, "method_not_allowed", "GET, HEAD"},
		{"lower-case method", request("get", "/healthz", ""), "get", 405, "method_not_allowed", "GET, HEAD"},
		{"PATCH refresh", request("PATCH", "/v1/tokens/svc/refresh", ""), "PATCH", 405, "method_not_allowed", "POST"},
		{"OPTIONS", request("OPTIONS", "/v1/credentials", ""), "OPTIONS", 405, "method_not_allowed", "GET, HEAD"},
		{"body holding a request", request("DELETE", "/v1/tokens/svc", "Content-Length: "+strconv.Itoa(len(smuggled))+"\r\n") + smuggled,
			"DELETE", 405, "method_not_allowed", "GET, HEAD"},
		{"chunked body holding a request", request("PUT", "/healthz", "Transfer-Encoding: chunked\r\n") +
			strconv.FormatInt(int64(len(smuggled)), 16) + "\r\n" + smuggled + "\r\n0\r\n\r\n",
			"PUT", 405, "method_not_allowed", "GET, HEAD"},
		{"trailing slash", request("GET", "/healthz/", ""), "GET", 404, "not_found", ""},
		{"below credentials", request("GET", "/v1/credentials/svc", ""), "GET", 404, "not_found", ""},
		{"HEAD unknown", request("HEAD", "/nope", ""), "HEAD", 404, "not_found", ""},
		{"absolute-form target", request("GET", "http://elsewhere/nope", ""), "GET", 404, "not_found", ""},
	} {
		resp, body, err := c.send(tc.raw, tc.method)
		if err != nil {
			t.Fatalf("%s: %v (the connection did not survive the previous answers)", tc.desc, err)
		}
		if tc.method == "HEAD" {
			if resp.StatusCode != tc.status || resp.Header.Get("Content-Type") != "application/json" || len(body) != 0 {
				t.Errorf("%s: %d %q with %d body bytes, want %d application/json without a body",
					tc.desc, resp.StatusCode, resp.Header.Get("Content-Type"), len(body), tc.status)
			}
		} else if err := checkErrorAnswer(resp, body, tc.status, tc.code); err != nil {
			t.Errorf("%s: %v", tc.desc, err)
		}
		if got := resp.Header.Get("Allow"); got != tc.allow {
			t.Errorf("%s: Allow = %q, want %q", tc.desc, got, tc.allow)
		}
		if resp.Close {
			t.Errorf("%s: the server closes the connection after an error answer", tc.desc)
		}
	}
	// Still in step: the next answer is this request's, not a smuggled one's.
	resp, body, err := c.send(request("GET", "/healthz", ""), "GET")
	if err != nil || resp.StatusCode != 200 || strings.TrimSpace(string(body)) != `{"status":"ok"}` {
		t.Fatalf("healthz after the errors: %v %v %s, want 200 {\"status\":\"ok\"}", err, resp, body)
	}
	if n := b.tokenCalls.Load(); n != 0 {
		t.Errorf("the broker was asked for %d tokens: a request hidden in a body was served", n)
	}
}

// TestAbuseHugeHeaders sends headers far beyond api.MaxHeaderBytes, one
// huge one or thousands of small ones, from several connections at once:
// each gets 431 and is closed, never reaches a handler, and the server keeps
// answering a real client meanwhile. A header well under the limit is
// served.
func TestAbuseHugeHeaders(t *testing.T) {
	b := newAbuseBroker(t)
	ls := startServer(t, b)

	var many strings.Builder
	for i := 0; many.Len() < 4*api.MaxHeaderBytes; i++ {
		fmt.Fprintf(&many, "X-Pad-%05d: 0123456789\r\n", i)
	}
	shapes := map[string]string{
		"one huge header": "X-Junk: " + strings.Repeat("a", 4*api.MaxHeaderBytes) + "\r\n",
		"many headers":    many.String(),
	}

	const perShape, handouts = 8, 50
	var wg sync.WaitGroup
	errs := make(chan error, 2*perShape+handouts)
	for desc, hdr := range shapes {
		for range perShape {
			c := dialRaw(t, ls.path)
			wg.Go(func() {
				raw := request("GET", "/v1/tokens/svc", hdr)
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				// The server stops reading at the limit: write on the side,
				// and let the write fail once it hangs up.
				wrote := make(chan struct{})
				go func() { defer close(wrote); _, _ = io.WriteString(c, raw) }()
				defer func() { c.Close(); <-wrote }()
				resp, body, err := c.read("GET")
				if err != nil {
					errs <- fmt.Errorf("%s: %v", desc, err)
					return
				}
				if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
					errs <- fmt.Errorf("%s: status %d, want 431; body %.200s", desc, resp.StatusCode, body)
					return
				}
				if rest, err := c.closedByServer(5 * time.Second); err != nil || strings.Contains(string(rest), fakebroker.SecretToken) {
					errs <- fmt.Errorf("%s: after the 431: %v; then %.200q", desc, err, rest)
				}
			})
		}
	}
	cl := client.New(ls.path)
	defer cl.Close()
	wg.Go(func() {
		for range handouts {
			if tok, err := cl.Token(context.Background(), "svc"); err != nil || tok.AccessToken != fakebroker.SecretToken {
				errs <- fmt.Errorf("a real handout while headers flood in: %v", err)
				return
			}
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	// Under the limit is fine.
	c := dialRaw(t, ls.path)
	hdr := "X-Fine: " + strings.Repeat("a", api.MaxHeaderBytes/2) + "\r\n"
	if resp, body, err := c.send(request("GET", "/v1/tokens/svc", hdr), "GET"); err != nil || resp.StatusCode != 200 {
		t.Errorf("a %d-byte header: %v %v %.200s, want 200", api.MaxHeaderBytes/2, err, resp, body)
	}
	if n := b.tokenCalls.Load(); n != handouts+1 {
		t.Errorf("the broker was asked for %d tokens, want %d: an oversized request reached the handler", n, handouts+1)
	}
}

// TestAbuseSlowHeadersClosed holds connections that never finish their
// request header (silent, half a request line, no blank line, one byte at a
// time, or a second request after a good one) and checks the server hangs up
// on each by itself after api.ReadHeaderTimeout, with at most a 400, while
// it serves a real client. It waits out the real timeout, in parallel.
func TestAbuseSlowHeadersClosed(t *testing.T) {
	t.Parallel()
	b := newAbuseBroker(t)
	ls := startServer(t, b)
	within := api.ReadHeaderTimeout + 2*time.Second

	type slow struct {
		desc string
		c    *rawConn
	}
	var conns []slow
	open := func(desc, first string) *rawConn {
		c := dialRaw(t, ls.path)
		if _, err := io.WriteString(c, first); err != nil {
			t.Fatalf("%s: %v", desc, err)
		}
		conns = append(conns, slow{desc, c})
		return c
	}
	open("silent", "")
	open("half a request line", "GET /v1/tok")
	open("no blank line", "GET /v1/tokens/svc HTTP/1.1\r\nHost: tokenbroker\r\n")
	// One byte every 100 ms: each read succeeds, so only an absolute
	// deadline on the whole header stops it.
	trickle := open("trickle", "GET /v1/tokens/svc HTTP/1.1\r\nX-Slow: ")
	stopTrickle := make(chan struct{})
	trickled := make(chan struct{})
	go func() {
		defer close(trickled)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stopTrickle:
				return
			case <-tick.C:
				if _, err := trickle.Write([]byte("a")); err != nil {
					return
				}
			}
		}
	}()
	defer func() { close(stopTrickle); <-trickled }()
	// A kept-alive connection whose second request stalls.
	second := dialRaw(t, ls.path)
	if resp, _, err := second.send(request("GET", "/healthz", ""), "GET"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("healthz: %v %v", err, resp)
	}
	if _, err := io.WriteString(second, "GET /v1/tok"); err != nil {
		t.Fatal(err)
	}
	conns = append(conns, slow{"second request stalled", second})

	// The server serves others meanwhile.
	cl := client.New(ls.path)
	defer cl.Close()
	if tok, err := cl.Token(context.Background(), "svc"); err != nil || tok.AccessToken != fakebroker.SecretToken {
		t.Errorf("a handout while slow clients hang on: %v", err)
	}

	var wg sync.WaitGroup
	for _, s := range conns {
		wg.Go(func() {
			got, err := s.c.closedByServer(within)
			if err != nil {
				t.Errorf("%s: %v", s.desc, err)
			}
			// net/http hangs up silently, or with a plain 400 when it
			// had part of a request line; never more.
			if len(got) != 0 && !strings.HasPrefix(string(got), "HTTP/1.1 400 ") || strings.Contains(string(got), fakebroker.SecretToken) {
				t.Errorf("%s: the server answered %.200q, want nothing or a 400", s.desc, got)
			}
		})
	}
	wg.Wait()
	if n := b.tokenCalls.Load(); n != 1 {
		t.Errorf("the broker was asked for %d tokens, want 1 (the real client's)", n)
	}
}

// TestAbuseSlowBodyClosed sends a request whose body never finishes and
// checks the server hangs up after api.ReadTimeout rather than wait for it
// forever. It waits out the real timeout, in parallel.
func TestAbuseSlowBodyClosed(t *testing.T) {
	t.Parallel()
	b := newAbuseBroker(t)
	ls := startServer(t, b)
	c := dialRaw(t, ls.path)
	// A 405 route: no broker call, and net/http drains the body itself.
	raw := request("POST", "/v1/tokens/svc", "Content-Length: 1000\r\n") + "only ten b"
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	got, err := c.closedByServer(api.ReadTimeout + 2*time.Second)
	if err != nil {
		t.Errorf("a body that never ends: %v", err)
	}
	if strings.Contains(string(got), fakebroker.SecretToken) {
		t.Errorf("the answer holds the access token: %q", got)
	}
	if n := b.tokenCalls.Load() + b.refreshCalls.Load(); n != 0 {
		t.Errorf("the broker was called %d times, want none", n)
	}
}

// TestAbuseIdleConnections opens 500 connections that say nothing and 20
// that stay open after one request, checks a real client is served
// meanwhile, and that once they are closed the server's goroutines go back
// to what they were, and Shutdown leaves none.
func TestAbuseIdleConnections(t *testing.T) {
	leaks := goleak.IgnoreCurrent()
	b := newAbuseBroker(t)
	ls := startServer(t, b)
	base, fds := runtime.NumGoroutine(), openFDs()

	const silent, kept = 500, 20
	conns := make([]*rawConn, 0, silent+kept)
	for range silent {
		conns = append(conns, dialRaw(t, ls.path))
	}
	for range kept {
		c := dialRaw(t, ls.path)
		if resp, _, err := c.send(request("GET", "/healthz", ""), "GET"); err != nil || resp.StatusCode != 200 {
			t.Fatalf("healthz: %v %v", err, resp)
		}
		conns = append(conns, c)
	}
	// One goroutine per connection on the server's side (a few of the
	// goroutines counted in base may end meanwhile).
	tbtest.WaitFor(t, 5*time.Second, "the server to take every connection", func() bool {
		return runtime.NumGoroutine()-base >= len(conns)-10
	})

	cl := client.New(ls.path)
	if tok, err := cl.Token(context.Background(), "svc"); err != nil || tok.AccessToken != fakebroker.SecretToken {
		t.Errorf("a handout among %d idle connections: %v", len(conns), err)
	}
	cl.Close()

	for _, c := range conns {
		c.Close()
	}
	tbtest.WaitFor(t, 5*time.Second, fmt.Sprintf("the goroutines to go back to %d", base), func() bool {
		return runtime.NumGoroutine() <= base
	})
	waitFDs(t, fds) // the server's side of each connection, and what it keeps per connection

	ls.stop(t)
	noLeaks(t, leaks)
}

// TestAbuseFloodInBackoff sends 2000 handouts over 64 connections at once
// for a credential in backoff: every answer is a 503 that says when to come
// back, each request asks the broker once and nothing else (no refresh),
// and the heap does not grow out of bounds.
func TestAbuseFloodInBackoff(t *testing.T) {
	leaks := goleak.IgnoreCurrent()
	b := newAbuseBroker(t)
	ls := startServer(t, b)
	ue := b.Unavailable["down"]
	maxRetry := int(time.Until(ue.RetryAt)/time.Second) + 1

	const total, nconn = 2000, 64
	conns := make([]*rawConn, nconn)
	for i := range conns {
		conns[i] = dialRaw(t, ls.path)
	}
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)

	var next, answered, bad atomic.Int64
	var mu sync.Mutex
	var examples []string
	fail := func(format string, args ...any) {
		if bad.Add(1) <= 5 {
			mu.Lock()
			examples = append(examples, fmt.Sprintf(format, args...))
			mu.Unlock()
		}
	}
	raw := request("GET", "/v1/tokens/down", "")
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Go(func() {
			for next.Add(1) <= total {
				resp, body, err := c.send(raw, "GET")
				if err != nil {
					fail("%v", err)
					return
				}
				answered.Add(1)
				if err := checkErrorAnswer(resp, body, http.StatusServiceUnavailable, "token_unavailable"); err != nil {
					fail("%v", err)
					continue
				}
				ra, err := strconv.Atoi(resp.Header.Get("Retry-After"))
				if err != nil || ra < 1 || ra > maxRetry {
					fail("Retry-After = %q, want 1 to %d seconds", resp.Header.Get("Retry-After"), maxRetry)
				}
				if !strings.Contains(string(body), ue.Advice()) {
					fail("the answer does not say when the broker retries (%q): %s", ue.Advice(), body)
				}
			}
		})
	}
	wg.Wait()
	for _, c := range conns {
		c.Close()
	}
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)

	if n := answered.Load(); n != total {
		t.Errorf("%d answers, want %d", n, total)
	}
	if n := bad.Load(); n > 0 {
		t.Errorf("%d bad answers of %d, for example:\n%s", n, total, strings.Join(examples, "\n"))
	}
	if n := b.tokenCalls.Load(); n != total {
		t.Errorf("the broker was asked for %d tokens, want one per request (%d)", n, total)
	}
	if n := b.refreshCalls.Load() + b.statusCalls.Load(); n != 0 {
		t.Errorf("the flood made %d other broker calls, want none", n)
	}
	if growth := int64(after.HeapInuse) - int64(before.HeapInuse); growth > 64<<20 {
		t.Errorf("the heap in use grew by %d MiB over the flood", growth>>20)
	} else {
		t.Logf("heap in use: %d KiB before, %d KiB after", before.HeapInuse>>10, after.HeapInuse>>10)
	}
	ls.stop(t)
	noLeaks(t, leaks)
}

// TestAbuseShutdownAfterMix abuses the server every way above at once, and
// leaves it with silent and half-sent connections, kept-alive idle ones and
// a handout stuck in the broker. A Shutdown whose context ends first must
// then close every connection itself, end the stuck request, and leave no
// goroutine behind.
func TestAbuseShutdownAfterMix(t *testing.T) {
	leaks := goleak.IgnoreCurrent()
	fds := openFDs()
	b := newAbuseBroker(t)
	ls := startServer(t, b)

	var open []*rawConn
	for range 50 {
		open = append(open, dialRaw(t, ls.path))
	}
	for range 20 {
		c := dialRaw(t, ls.path)
		if _, err := io.WriteString(c, "GET /v1/tok"); err != nil {
			t.Fatal(err)
		}
		open = append(open, c)
	}
	var wg sync.WaitGroup
	var failed atomic.Int64
	for i := range 20 {
		c := dialRaw(t, ls.path)
		open = append(open, c)
		wg.Go(func() {
			for _, p := range []string{"/healthz", "/nope", "/v1/tokens/nope", "/v1/tokens/down"} {
				if _, _, err := c.send(request("GET", p, ""), "GET"); err != nil {
					failed.Add(1)
				}
			}
			if i%2 == 0 {
				if _, _, err := c.send(request("DELETE", "/v1/credentials", ""), "DELETE"); err != nil {
					failed.Add(1)
				}
			}
		})
	}
	for range 4 {
		c := dialRaw(t, ls.path)
		wg.Go(func() {
			wrote := make(chan struct{})
			go func() {
				defer close(wrote)
				_, _ = io.WriteString(c, request("GET", "/v1/tokens/svc", "X-Junk: "+strings.Repeat("a", 4*api.MaxHeaderBytes)+"\r\n"))
			}()
			if resp, _, err := c.read("GET"); err != nil || resp.StatusCode != 431 {
				failed.Add(1)
			}
			c.Close()
			<-wrote
		})
	}
	for range 16 {
		c := dialRaw(t, ls.path)
		open = append(open, c)
		wg.Go(func() {
			for range 25 {
				if resp, _, err := c.send(request("GET", "/v1/tokens/down", ""), "GET"); err != nil || resp.StatusCode != 503 {
					failed.Add(1)
					return
				}
			}
		})
	}
	wg.Wait()
	if n := failed.Load(); n > 0 {
		t.Errorf("%d requests of the mix failed", n)
	}

	cl := client.New(ls.path)
	defer cl.Close()
	stuck := make(chan error, 1)
	go func() {
		_, err := cl.Token(context.Background(), "slow")
		stuck <- err
	}()
	select {
	case <-b.entered:
	case <-time.After(5 * time.Second):
		t.Fatal("the slow handout never reached the broker")
	}

	// The silent and half-sent connections stay "active" for net/http until
	// ReadHeaderTimeout, and the handout is stuck: this cannot finish in time.
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := ls.srv.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown = %v, want the context's deadline error", err)
	}
	ls.once.Do(func() {}) // shut down already
	ls.checkServed(t)

	// Well within ReadHeaderTimeout: Shutdown closed them, not the timeout.
	for i, c := range open {
		if _, err := c.closedByServer(2 * time.Second); err != nil {
			t.Errorf("connection %d after Shutdown gave up: %v", i, err)
		}
	}
	select {
	case err := <-stuck:
		if err == nil {
			t.Errorf("the stuck handout succeeded after Shutdown closed its connection")
		}
	case <-time.After(5 * time.Second):
		t.Errorf("the stuck handout's client is still waiting after Shutdown")
	}
	if _, err := os.Lstat(ls.path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the socket file is still there: %v", err)
	}
	cl.Close()
	for _, c := range open {
		c.Close()
	}
	noLeaks(t, leaks)
	waitFDs(t, fds)
}

// TestAbuseShutdownWaitsForSlowHandout shuts down while a handout is stuck
// in the broker: Shutdown closes the idle kept-alive connection and the
// socket at once, waits for the handout, which then gets its 200 with
// "Connection: close", and leaves no goroutine behind.
func TestAbuseShutdownWaitsForSlowHandout(t *testing.T) {
	leaks := goleak.IgnoreCurrent()
	b := newAbuseBroker(t)
	ls := startServer(t, b)

	idle := dialRaw(t, ls.path)
	if resp, _, err := idle.send(request("GET", "/healthz", ""), "GET"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("healthz: %v %v", err, resp)
	}
	inflight := dialRaw(t, ls.path)
	if _, err := io.WriteString(inflight, request("GET", "/v1/tokens/slow", "")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-b.entered:
	case <-time.After(5 * time.Second):
		t.Fatal("the slow handout never reached the broker")
	}

	shut := make(chan error, 1)
	go func() { shut <- ls.srv.Shutdown(context.Background()) }()
	ls.once.Do(func() {}) // shut down here

	if _, err := idle.closedByServer(5 * time.Second); err != nil {
		t.Errorf("the idle connection during Shutdown: %v", err)
	}
	tbtest.WaitFor(t, 5*time.Second, "new connections to be refused", func() bool {
		c, err := net.Dial("unix", ls.path)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v with a handout in flight", err)
	default:
	}

	b.releaseAll()
	resp, body, err := inflight.read("GET")
	if err != nil {
		t.Fatalf("the handout in flight: %v", err)
	}
	var got struct {
		AccessToken string `json:"access_token"`
	}
	if resp.StatusCode != 200 || json.Unmarshal(body, &got) != nil || got.AccessToken != fakebroker.SecretToken {
		t.Errorf("the handout in flight: %d %.200s, want 200 with the token", resp.StatusCode, body)
	}
	if !resp.Close {
		t.Errorf("the answer during Shutdown does not say Connection: close")
	}
	if _, err := inflight.closedByServer(5 * time.Second); err != nil {
		t.Errorf("the handout's connection after its answer: %v", err)
	}
	select {
	case err := <-shut:
		if err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Shutdown has not returned 5 s after the last request finished")
	}
	ls.checkServed(t)
	noLeaks(t, leaks)
}
