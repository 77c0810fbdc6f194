package client_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/api/client"
	"golang.org/x/oauth2"
)

// secretPrefix starts every token rotBroker hands out, so that a test can
// look for it in error messages.
const secretPrefix = "SECRET-tokensource-9f27c1-"

// rotBroker is served by standIn: "svc" has a token that changes on every
// Refresh (generation 1, 2, ...); "down" never has one; every other name is
// unknown.
type rotBroker struct {
	mu          sync.Mutex
	gen         int
	expiry      time.Time
	life        time.Duration // of each new token; 0 means an hour
	down        int           // answer 503 token_unavailable this many times first
	refreshErr  error         // what Refresh fails with, if anything
	refreshes   int
	handoutGate chan struct{} // when set, a handout waits for it
	handoutIn   chan struct{} // when set, a handout signals it before waiting
}

func (f *rotBroker) rotate() {
	f.gen++
	life := f.life
	if life == 0 {
		life = time.Hour
	}
	f.expiry = time.Now().Add(life)
}

func (f *rotBroker) token(gen int) string { return secretPrefix + strconv.Itoa(gen) }

func (f *rotBroker) Token(name string) (string, time.Time, error) {
	f.mu.Lock()
	in, gate := f.handoutIn, f.handoutGate
	f.mu.Unlock()
	if in != nil {
		in <- struct{}{}
	}
	if gate != nil {
		<-gate
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	switch name {
	case "svc":
		if f.down > 0 {
			f.down--
			return "", time.Time{}, errUnavailable
		}
		if f.gen == 0 {
			f.rotate()
		}
		return f.token(f.gen), f.expiry, nil
	case "down":
		return "", time.Time{}, errUnavailable
	}
	return "", time.Time{}, errUnknown
}

func (f *rotBroker) Status() []client.CredentialStatus { return nil }

func (f *rotBroker) Refresh(name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.refreshes++
	if name != "svc" {
		return errUnknown
	}
	if f.refreshErr != nil {
		return f.refreshErr
	}
	f.rotate()
	return nil
}

func (f *rotBroker) refreshCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.refreshes
}

// counter counts the requests that reach the broker's API.
type counter struct{ gets, posts atomic.Int64 }

func (c *counter) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			c.posts.Add(1)
		} else {
			c.gets.Add(1)
		}
		h.ServeHTTP(w, r)
	})
}

func apiHandler(f *rotBroker) http.Handler { return standIn(f) }

// countedBroker serves f's API on a new socket and counts its requests.
func countedBroker(t *testing.T, f *rotBroker) (*client.Client, *counter) {
	t.Helper()
	n := &counter{}
	return newClient(t, serve(t, n.wrap(apiHandler(f)))), n
}

// restartable serves h on socket p while running; stop closes the server,
// which removes the socket, and start serves again on p.
type restartable struct {
	t    *testing.T
	p    string
	h    http.Handler
	mu   sync.Mutex
	srv  *http.Server
	done chan struct{}
}

func newRestartable(t *testing.T, h http.Handler) *restartable {
	r := &restartable{t: t, p: socketPath(t), h: h}
	r.start()
	t.Cleanup(r.stop)
	return r
}

func (r *restartable) start() {
	r.mu.Lock()
	defer r.mu.Unlock()
	l, err := net.Listen("unix", r.p)
	if err != nil {
		r.t.Error(err)
		return
	}
	r.srv, r.done = &http.Server{Handler: r.h}, make(chan struct{})
	go func(srv *http.Server, done chan struct{}) { defer close(done); _ = srv.Serve(l) }(r.srv, r.done)
}

func (r *restartable) stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.srv != nil {
		r.srv.Close()
		<-r.done
		r.srv = nil
	}
}

func mustToken(t *testing.T, ts oauth2.TokenSource) *oauth2.Token {
	t.Helper()
	tok, err := ts.Token()
	if err != nil {
		t.Fatalf("Token: %v", err)
	}
	if !strings.HasPrefix(tok.AccessToken, secretPrefix) || tok.Type() != "Bearer" || tok.Expiry.IsZero() {
		t.Fatalf("Token = %q %q %v, want one of rotBroker's Bearer tokens with an expiry", tok.AccessToken, tok.TokenType, tok.Expiry)
	}
	return tok
}

func TestTokenSourceCacheHit(t *testing.T) {
	f := &rotBroker{}
	c, n := countedBroker(t, f)
	ts := c.TokenSource("svc", nil)
	var _ oauth2.TokenSource = ts
	first := mustToken(t, ts)
	if first.AccessToken != f.token(1) || first.ExpiresIn < 3590 {
		t.Errorf("Token = %q expiring in %d s, want %q for an hour", first.AccessToken, first.ExpiresIn, f.token(1))
	}
	for range 1000 {
		if tok := mustToken(t, ts); tok != first {
			t.Fatalf("a cache hit returned another token: %p, want %p", tok, first)
		}
	}
	if got := n.gets.Load(); got != 1 {
		t.Errorf("the broker got %d requests, want 1: cache hits must not ask it", got)
	}
	if c.TokenSource("svc", nil) != ts {
		t.Error("TokenSource(name, nil) returned another source: Transport would not share the cache")
	}
	other := c.TokenSource("svc", &client.TokenSourceOptions{})
	if other == ts {
		t.Error("TokenSource with options returned the shared source")
	}
	mustToken(t, other)
	if got := n.gets.Load(); got != 2 {
		t.Errorf("the broker got %d requests, want 2: a source with options has its own cache", got)
	}
}

// A MinTTL longer than the broker's must not turn every call into a
// request: it is capped at half the life left.
func TestTokenSourceLongMinTTL(t *testing.T) {
	f := &rotBroker{}
	c, n := countedBroker(t, f)
	ts := c.TokenSource("svc", &client.TokenSourceOptions{MinTTL: 2 * time.Hour})
	for range 10 {
		mustToken(t, ts)
	}
	if got := n.gets.Load(); got != 1 {
		t.Errorf("the broker got %d requests, want 1", got)
	}
}

func TestTokenSourceStaleRefetches(t *testing.T) {
	f := &rotBroker{}
	c, n := countedBroker(t, f)
	ts := c.TokenSource("svc", nil)
	mustToken(t, ts)

	// Stale but valid: the caller refetches and gets the broker's new token.
	f.mu.Lock()
	f.rotate()
	f.mu.Unlock()
	ts.SetDeadlinesForTest(time.Now().Add(-time.Second), time.Now().Add(time.Minute))
	if tok := mustToken(t, ts); tok.AccessToken != f.token(2) {
		t.Errorf("after the cache went stale: %q, want %q", tok.AccessToken, f.token(2))
	}
	if got := n.gets.Load(); got != 2 {
		t.Errorf("the broker got %d requests, want 2", got)
	}
	mustToken(t, ts)
	if got := n.gets.Load(); got != 2 {
		t.Errorf("the refetched token is not cached: %d requests, want 2", got)
	}

	// Expired.
	f.mu.Lock()
	f.rotate()
	f.mu.Unlock()
	ts.SetDeadlinesForTest(time.Now().Add(-time.Second), time.Now().Add(-time.Second))
	if tok := mustToken(t, ts); tok.AccessToken != f.token(3) {
		t.Errorf("after the cached token expired: %q, want %q", tok.AccessToken, f.token(3))
	}
	if got := n.gets.Load(); got != 3 {
		t.Errorf("the broker got %d requests, want 3", got)
	}
}

// The same with real time: a 100 ms token, asked for again after it expired.
func TestTokenSourceShortLivedToken(t *testing.T) {
	f := &rotBroker{life: 100 * time.Millisecond}
	c, n := countedBroker(t, f)
	ts := c.TokenSource("svc", nil)
	tok := mustToken(t, ts)
	time.Sleep(time.Until(tok.Expiry) + 10*time.Millisecond)
	f.mu.Lock()
	f.rotate()
	f.mu.Unlock()
	if tok := mustToken(t, ts); tok.AccessToken != f.token(2) {
		t.Errorf("after the token expired: %q, want %q", tok.AccessToken, f.token(2))
	}
	if got := n.gets.Load(); got != 2 {
		t.Errorf("the broker got %d requests, want 2", got)
	}
}

// While one caller refetches a stale token, the others keep the cached one
// without waiting; once it has expired, they wait for that one request.
func TestTokenSourceOneRefetch(t *testing.T) {
	for _, expired := range []bool{false, true} {
		t.Run(fmt.Sprintf("expired=%v", expired), func(t *testing.T) {
			f := &rotBroker{}
			c, n := countedBroker(t, f)
			ts := c.TokenSource("svc", nil)
			old := mustToken(t, ts)

			expiry := time.Now().Add(time.Minute)
			if expired {
				expiry = time.Now().Add(-time.Second)
			}
			gate, in := make(chan struct{}), make(chan struct{})
			f.mu.Lock()
			f.rotate()
			f.handoutGate, f.handoutIn = gate, in
			f.mu.Unlock()
			ts.SetDeadlinesForTest(time.Now().Add(-time.Second), expiry)

			fetcher := make(chan *oauth2.Token, 1)
			go func() {
				tok, err := ts.Token()
				if err != nil {
					t.Errorf("the fetching caller: %v", err)
				}
				fetcher <- tok
			}()
			<-in // the fetch reached the broker, which holds it
			f.mu.Lock()
			f.handoutGate, f.handoutIn = nil, nil
			f.mu.Unlock()

			const others = 8
			results := make(chan *oauth2.Token, others)
			for range others {
				go func() {
					tok, err := ts.Token()
					if err != nil {
						t.Errorf("another caller: %v", err)
					}
					results <- tok
				}()
			}
			if !expired {
				for range others {
					select {
					case tok := <-results:
						if tok != old {
							t.Errorf("while the fetch is held, a caller got %v, want the cached token", tok)
						}
					case <-time.After(10 * time.Second): // a failure guard, not a measure
						t.Fatal("a caller waited for the fetch although the cached token is valid")
					}
				}
			} else {
				time.Sleep(20 * time.Millisecond) // let the others reach the wait
			}
			close(gate)
			if tok := <-fetcher; tok == nil || tok.AccessToken != f.token(2) {
				t.Errorf("the fetching caller got %v, want %q", tok, f.token(2))
			}
			if expired {
				for range others {
					if tok := <-results; tok == nil || tok.AccessToken != f.token(2) {
						t.Errorf("a waiting caller got %v, want the fetched token", tok)
					}
				}
			}
			if got := n.gets.Load(); got != 2 {
				t.Errorf("the broker got %d requests, want 2: one refetch", got)
			}
		})
	}
}

func TestTokenSourceConcurrentColdStart(t *testing.T) {
	f := &rotBroker{}
	c, n := countedBroker(t, f)
	ts := c.TokenSource("svc", nil)
	const callers = 32
	var wg sync.WaitGroup
	start := make(chan struct{})
	toks := make([]*oauth2.Token, callers)
	for i := range callers {
		wg.Go(func() {
			<-start
			tok, err := ts.Token()
			if err != nil {
				t.Errorf("Token: %v", err)
			}
			toks[i] = tok
		})
	}
	close(start)
	wg.Wait()
	for _, tok := range toks {
		if tok != toks[0] {
			t.Fatalf("callers got different tokens")
		}
	}
	if got := n.gets.Load(); got != 1 {
		t.Errorf("%d concurrent callers made %d requests, want 1", callers, got)
	}
}

// Callers race with rotations, stale and expired entries; run with -race.
func TestTokenSourceConcurrent(t *testing.T) {
	f := &rotBroker{}
	c, _ := countedBroker(t, f)
	ts := c.TokenSource("svc", nil)
	mustToken(t, ts)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				tok, err := ts.TokenContext(context.Background())
				if err != nil || !strings.HasPrefix(tok.AccessToken, secretPrefix) {
					t.Errorf("Token = %v, %v", tok, err)
					return
				}
			}
		})
	}
	for i := range 20 {
		f.mu.Lock()
		f.rotate()
		f.mu.Unlock()
		expiry := time.Now().Add(time.Minute)
		if i%2 == 1 {
			expiry = time.Now().Add(-time.Second)
		}
		ts.SetDeadlinesForTest(time.Now().Add(-time.Second), expiry)
		time.Sleep(time.Millisecond)
	}
	close(stop)
	wg.Wait()
}

func TestTokenSourceBrokerRestart(t *testing.T) {
	for _, tc := range []struct {
		name   string
		cached bool // an expired token is cached when the broker stops
	}{{"cold", false}, {"expired", true}} {
		t.Run(tc.name, func(t *testing.T) {
			f := &rotBroker{}
			n := &counter{}
			r := newRestartable(t, n.wrap(apiHandler(f)))
			c := newClient(t, r.p)
			ts := c.TokenSource("svc", nil)
			if tc.cached {
				mustToken(t, ts)
				ts.SetDeadlinesForTest(time.Now().Add(-time.Second), time.Now().Add(-time.Second))
				c.Close() // no idle connection to the old server
			}
			r.stop()
			restarted := make(chan struct{})
			go func() {
				defer close(restarted)
				time.Sleep(200 * time.Millisecond)
				r.start()
			}()
			tok, err := ts.Token()
			<-restarted
			if err != nil {
				t.Fatalf("Token across a broker restart: %v", err)
			}
			if !strings.HasPrefix(tok.AccessToken, secretPrefix) {
				t.Errorf("Token = %q, want a rotBroker token", tok.AccessToken)
			}
		})
	}
}

// The control: without retries, the same restart is an error.
func TestTokenSourceNoRetry(t *testing.T) {
	r := newRestartable(t, apiHandler(&rotBroker{}))
	c := newClient(t, r.p)
	r.stop()
	ts := c.TokenSource("svc", &client.TokenSourceOptions{RetryFor: -1})
	if _, err := ts.Token(); !errors.Is(err, client.ErrUnreachable) {
		t.Errorf("Token with RetryFor < 0 and no broker = %v, want ErrUnreachable", err)
	}
}

func TestTokenSourceGivesUp(t *testing.T) {
	p := socketPath(t)
	c := newClient(t, p)
	ts := c.TokenSource("svc", &client.TokenSourceOptions{RetryFor: 100 * time.Millisecond})
	_, err := ts.Token()
	if !errors.Is(err, client.ErrUnreachable) || !strings.Contains(err.Error(), p) {
		t.Errorf("Token without a broker = %v, want ErrUnreachable naming %s", err, p)
	}

	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	_, err = c.TokenSource("svc", nil).TokenContext(ctx)
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), p) {
		t.Errorf("Token canceled while retrying = %v, want context.Canceled naming %s", err, p)
	}
}

func TestTokenSourceRetriesUnavailable(t *testing.T) {
	f := &rotBroker{down: 2}
	c, n := countedBroker(t, f)
	mustToken(t, c.TokenSource("svc", nil))
	if got := n.gets.Load(); got != 3 {
		t.Errorf("the broker got %d requests, want 3: two 503s, then the token", got)
	}

	// A credential that stays unavailable: the 503 after the bound.
	ts := c.TokenSource("down", &client.TokenSourceOptions{RetryFor: 100 * time.Millisecond})
	_, err := ts.Token()
	var e *client.Error
	if !errors.As(err, &e) || e.Status != 503 || e.Code != "token_unavailable" || !strings.Contains(err.Error(), `"down"`) {
		t.Errorf("Token(down) = %v, want a 503 token_unavailable naming the credential", err)
	}
}

func TestTokenSourceFinalErrors(t *testing.T) {
	f := &rotBroker{}
	c, n := countedBroker(t, f)
	for _, tc := range []struct {
		name   string
		status int
		code   string
	}{
		{"nope", 404, "unknown_credential"},
		{"Bad/Name", 400, "invalid_name"},
	} {
		before := n.gets.Load()
		_, err := c.TokenSource(tc.name, nil).Token()
		var e *client.Error
		if !errors.As(err, &e) || e.Status != tc.status || e.Code != tc.code {
			t.Errorf("Token(%q) = %v, want %d %s", tc.name, err, tc.status, tc.code)
			continue
		}
		if !strings.Contains(err.Error(), strconv.Quote(tc.name)) {
			t.Errorf("Token(%q): %q does not name the credential", tc.name, err)
		}
		if got := n.gets.Load() - before; got != 1 {
			t.Errorf("Token(%q) made %d requests, want 1: no retry", tc.name, got)
		}
	}
}

// No error message holds a token, even when a token is cached.
func TestTokenSourceErrorsHoldNoToken(t *testing.T) {
	f := &rotBroker{}
	r := newRestartable(t, apiHandler(f))
	c := newClient(t, r.p)
	ts := c.TokenSource("svc", &client.TokenSourceOptions{RetryFor: 100 * time.Millisecond})
	mustToken(t, ts)
	var errs []error
	for _, name := range []string{"nope", "down", "Bad/Name"} {
		_, err := c.TokenSource(name, &client.TokenSourceOptions{RetryFor: -1}).Token()
		errs = append(errs, err)
	}
	// An API whose transport fails.
	hc := &http.Client{Transport: c.Transport("svc", roundTripFunc(func(r *http.Request) (*http.Response, error) {
		return nil, errors.New("connection reset")
	}))}
	_, err := hc.Get("http://api.example/x")
	errs = append(errs, err)
	// The broker gone while the cached token expired.
	r.stop()
	c.Close()
	ts.SetDeadlinesForTest(time.Now().Add(-time.Second), time.Now().Add(-time.Second))
	_, err = ts.Token()
	errs = append(errs, err)
	for i, err := range errs {
		if err == nil {
			t.Errorf("case %d: no error", i)
			continue
		}
		if strings.Contains(err.Error(), secretPrefix) || strings.Contains(fmt.Sprintf("%+v %#v", err, err), secretPrefix) {
			t.Errorf("case %d: the error reveals a token: %v", i, err)
		}
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func BenchmarkTokenSourceCached(b *testing.B) {
	p := benchSocket(b)
	c := client.New(p)
	defer c.Close()
	ts := c.TokenSource("svc", nil)
	if _, err := ts.Token(); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := ts.Token(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkTokenSourceCachedParallel(b *testing.B) {
	p := benchSocket(b)
	c := client.New(p)
	defer c.Close()
	ts := c.TokenSource("svc", nil)
	if _, err := ts.Token(); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := ts.Token(); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// The cached path's floor on this machine: one clock read.
func BenchmarkTokenSourceBaselineTimeNow(b *testing.B) {
	var t time.Time
	b.ReportAllocs()
	for b.Loop() {
		t = time.Now()
	}
	_ = t
}

// benchSocket serves a rotBroker on a new socket until b ends.
func benchSocket(b *testing.B) string {
	b.Helper()
	p := b.TempDir() + "/tb.sock"
	if len(p) > 100 {
		b.Skip("temporary directory too long for a socket path")
	}
	l, err := net.Listen("unix", p)
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{Handler: apiHandler(&rotBroker{})}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(l) }()
	b.Cleanup(func() { srv.Close(); <-done })
	return p
}
