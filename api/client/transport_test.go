package client_test

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/tokenbroker/tokenbroker/api/client"
)

// fakeAPI is an API behind bearer tokens: it answers 200 to the tokens
// accept allows, else 401, and records what it saw.
type fakeAPI struct {
	accept func(token string) bool
	hits   atomic.Int64

	mu     sync.Mutex
	auths  []string
	bodies []string
}

func (a *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := a.hits.Add(1)
	body, _ := io.ReadAll(r.Body)
	auth := r.Header.Get("Authorization")
	a.mu.Lock()
	a.auths, a.bodies = append(a.auths, auth), append(a.bodies, string(body))
	a.mu.Unlock()
	tok, ok := strings.CutPrefix(auth, "Bearer ")
	if !ok || !a.accept(tok) {
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprintf(w, "refused #%d", n)
		return
	}
	fmt.Fprintf(w, "ok #%d", n)
}

func newAPI(t *testing.T, accept func(string) bool) (*fakeAPI, string) {
	a := &fakeAPI{accept: accept}
	srv := httptest.NewServer(a)
	t.Cleanup(srv.Close)
	return a, srv.URL
}

func readAll(t *testing.T, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestTransportSetsBearer(t *testing.T) {
	f := &rotBroker{}
	c, n := countedBroker(t, f)
	a, url := newAPI(t, func(string) bool { return true })
	hc := c.HTTPClient("svc")
	for range 3 {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		req.Header.Set("X-Caller", "1")
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		readAll(t, resp)
		if resp.StatusCode != 200 {
			t.Errorf("status %d, want 200", resp.StatusCode)
		}
		if got := req.Header.Get("Authorization"); got != "" || len(req.Header) != 1 {
			t.Errorf("the caller's request was modified: %v", req.Header)
		}
	}
	for _, got := range a.auths {
		if got != "Bearer "+f.token(1) {
			t.Errorf("the API saw Authorization %q, want the broker's bearer token", got)
		}
	}
	if got := n.gets.Load(); got != 1 {
		t.Errorf("three requests asked the broker %d times, want 1", got)
	}
}

// The API refuses the first token: one refresh, one retry with the new
// token and the same body.
func TestTransport401RefreshesOnce(t *testing.T) {
	f := &rotBroker{}
	c, n := countedBroker(t, f)
	a, url := newAPI(t, func(tok string) bool { return tok == f.token(2) })
	resp, err := c.HTTPClient("svc").Post(url, "text/plain", strings.NewReader("payload"))
	if err != nil {
		t.Fatal(err)
	}
	if body := readAll(t, resp); resp.StatusCode != 200 || body != "ok #2" {
		t.Errorf("answer %d %q, want 200 ok #2", resp.StatusCode, body)
	}
	if got := f.refreshCount(); got != 1 {
		t.Errorf("%d refreshes, want 1", got)
	}
	if got, want := a.auths, []string{"Bearer " + f.token(1), "Bearer " + f.token(2)}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("the API saw %q, want %q", got, want)
	}
	if fmt.Sprint(a.bodies) != "[payload payload]" {
		t.Errorf("the API got bodies %q, want the payload twice", a.bodies)
	}
	if gets, posts := n.gets.Load(), n.posts.Load(); gets != 2 || posts != 1 {
		t.Errorf("the broker got %d GETs and %d POSTs, want 2 and 1", gets, posts)
	}
}

// onRefresh serves the broker's API, but answers POST .../refresh with
// refresh instead.
func onRefresh(t *testing.T, f *rotBroker, refresh http.HandlerFunc) *client.Client {
	h := apiHandler(f)
	return newClient(t, serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/refresh") {
			refresh(w, r)
			return
		}
		h.ServeHTTP(w, r)
	})))
}

func TestTransportSecond401Returned(t *testing.T) {
	f := &rotBroker{}
	// Every forced refresh succeeds: only the transport can stop a loop.
	c := onRefresh(t, f, func(w http.ResponseWriter, r *http.Request) {
		if f.refreshCount() > 0 {
			t.Error("a second refresh was asked for")
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		_ = f.Refresh("svc")
		w.WriteHeader(http.StatusNoContent)
	})
	a, url := newAPI(t, func(string) bool { return false })
	resp, err := c.HTTPClient("svc").Get(url)
	if err != nil {
		t.Fatal(err)
	}
	if body := readAll(t, resp); resp.StatusCode != 401 || body != "refused #2" {
		t.Errorf("answer %d %q, want the second 401", resp.StatusCode, body)
	}
	if got := a.hits.Load(); got != 2 {
		t.Errorf("the API got %d requests, want 2: one retry, no loop", got)
	}
	if got := f.refreshCount(); got != 1 {
		t.Errorf("%d refreshes, want 1", got)
	}
}

// onlyReader hides strings.Reader so that http.NewRequest sets no GetBody.
type onlyReader struct{ io.Reader }

func TestTransportBodyNotReplayable(t *testing.T) {
	f := &rotBroker{}
	c, _ := countedBroker(t, f)
	a, url := newAPI(t, func(tok string) bool { return tok == f.token(2) })
	req, _ := http.NewRequest(http.MethodPost, url, onlyReader{strings.NewReader("once")})
	if req.GetBody != nil {
		t.Fatal("the test's request has GetBody")
	}
	resp, err := c.HTTPClient("svc").Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if body := readAll(t, resp); resp.StatusCode != 401 || body != "refused #1" {
		t.Errorf("answer %d %q, want the first 401, unread", resp.StatusCode, body)
	}
	if got := a.hits.Load(); got != 1 {
		t.Errorf("the API got %d requests, want 1", got)
	}
	if got := f.refreshCount(); got != 0 {
		t.Errorf("%d refreshes, want 0: the request cannot be retried", got)
	}
}

// A refresh that fails leaves the API's 401 as the answer.
func TestTransportRefreshFails(t *testing.T) {
	f := &rotBroker{refreshErr: errors.New("provider answered 500")}
	c, _ := countedBroker(t, f)
	a, url := newAPI(t, func(string) bool { return false })
	resp, err := c.HTTPClient("svc").Get(url)
	if err != nil {
		t.Fatal(err)
	}
	if body := readAll(t, resp); resp.StatusCode != 401 || body != "refused #1" {
		t.Errorf("answer %d %q, want the first 401", resp.StatusCode, body)
	}
	if got := a.hits.Load(); got != 1 {
		t.Errorf("the API got %d requests, want 1", got)
	}
	if got := f.refreshCount(); got != 1 {
		t.Errorf("%d refreshes, want 1", got)
	}
}

// The broker refuses the forced refresh because another one just happened:
// its current token, if newer, is used.
func TestTransportRefreshLimited(t *testing.T) {
	f := &rotBroker{}
	c := onRefresh(t, f, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusTooManyRequests)
		fmt.Fprint(w, `{"error":"refresh_limited","error_description":"a refresh was forced less than 10s ago"}`)
	})
	a, url := newAPI(t, func(tok string) bool { return tok == f.token(2) })
	if _, err := c.TokenSource("svc", nil).Token(); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	f.rotate() // another process forced a refresh
	f.mu.Unlock()
	resp, err := c.HTTPClient("svc").Get(url)
	if err != nil {
		t.Fatal(err)
	}
	if body := readAll(t, resp); resp.StatusCode != 200 || body != "ok #2" {
		t.Errorf("answer %d %q, want 200 ok #2", resp.StatusCode, body)
	}
	if got := a.hits.Load(); got != 2 {
		t.Errorf("the API got %d requests, want 2", got)
	}
}

// Many requests refused together with the same token ask for one refresh.
func TestTransportRefreshStorm(t *testing.T) {
	const requests = 20
	f := &rotBroker{}
	c, n := countedBroker(t, f)
	// Hold every request with the first token until all have arrived, so
	// that all get their 401 together.
	var arrived sync.WaitGroup
	arrived.Add(requests)
	a, url := newAPI(t, func(tok string) bool {
		if tok == f.token(1) {
			arrived.Done()
			arrived.Wait()
			return false
		}
		return tok == f.token(2)
	})
	hc := c.HTTPClient("svc")
	if _, err := c.TokenSource("svc", nil).Token(); err != nil { // warm the cache
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range requests {
		wg.Go(func() {
			resp, err := hc.Post(url, "text/plain", strings.NewReader(strconv.Itoa(i)))
			if err != nil {
				t.Error(err)
				return
			}
			if body := readAll(t, resp); resp.StatusCode != 200 {
				t.Errorf("request %d: %d %q, want 200", i, resp.StatusCode, body)
			}
		})
	}
	wg.Wait()
	if got := f.refreshCount(); got != 1 {
		t.Errorf("%d requests refused together made %d refreshes, want 1", requests, got)
	}
	if got := a.hits.Load(); got != 2*requests {
		t.Errorf("the API got %d requests, want %d", got, 2*requests)
	}
	if gets := n.gets.Load(); gets != 2 {
		t.Errorf("the broker got %d GETs, want 2", gets)
	}
}

func TestTransportUnknownCredential(t *testing.T) {
	c, _ := countedBroker(t, &rotBroker{})
	a, url := newAPI(t, func(string) bool { return true })
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader("x"))
	_, err := c.HTTPClient("nope").Do(req)
	if err == nil || !strings.Contains(err.Error(), `credential "nope": unknown_credential`) {
		t.Errorf("a request with an unknown credential = %v, want an error naming it", err)
	}
	if got := a.hits.Load(); got != 0 {
		t.Errorf("the API got %d requests, want none", got)
	}
}
