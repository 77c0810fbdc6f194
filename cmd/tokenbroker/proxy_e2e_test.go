package main

import (
	"fmt"
	"github.com/tokenbroker/tokenbroker/internal/tbtest"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/sources/oauthtest"
)

// bearerAPI is an API that answers only bearer tokens p issued and that are
// still valid, and counts what it accepted and refused, by token.
type bearerAPI struct {
	*httptest.Server
	mu       sync.Mutex
	accepted map[string]int
	refused  int
}

func newBearerAPI(t *testing.T, p *oauthtest.Provider) *bearerAPI {
	a := &bearerAPI{accepted: map[string]int{}}
	a.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		valid := ok && p.Valid(tok) && len(r.Header.Values("Authorization")) == 1
		a.mu.Lock()
		if valid {
			a.accepted[tok]++
		} else {
			a.refused++
		}
		a.mu.Unlock()
		if !valid {
			w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
			http.Error(w, `{"error":"invalid_token"}`, http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"path":%q,"query":%q}`, r.URL.Path, r.URL.RawQuery)
	}))
	t.Cleanup(a.Close)
	return a
}

func (a *bearerAPI) counts() (accepted, tokens, refused int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, n := range a.accepted {
		accepted += n
	}
	return accepted, len(a.accepted), a.refused
}

// curl, knowing nothing of tokens, calls the API through the proxy over
// the socket while the broker refreshes the token several times: the API
// refuses none of its requests. A token revoked behind the broker's back
// is answered by one forced refresh and a retry the caller never sees.
func TestProxyEndToEnd(t *testing.T) {
	readmeNeedTool(t, "curl")
	p, environ, sock := e2eSetup(t, oauthtest.Options{AccessLifetime: 3 * time.Second, Rotate: true})
	api := newBearerAPI(t, p)
	environ = append(environ, "TOKENBROKER_FIREWORK_UPSTREAM="+api.URL+"/api", "TOKENBROKER_LIVEPUSH_UPSTREAM="+api.URL)
	logs := &tbtest.SyncBuffer{}
	startDaemon(t, environ, sock, logs)
	curl := func(path string, extra ...string) (string, error) {
		args := append([]string{"-sS", "--fail-with-body", "--unix-socket", sock, "-H", "X-Tokenbroker: 1"}, extra...)
		out, err := exec.Command("curl", append(args, "http://tokenbroker"+path)...).CombinedOutput()
		return string(out), err
	}

	// Long enough for at least three refreshes of each token (3 s tokens,
	// refreshed at 85% of their life).
	deadline := time.Now().Add(9 * time.Second)
	calls := 0
	for time.Now().Before(deadline) {
		out, err := curl("/v1/proxy/firework/v1/videos/123?fields=id")
		if err != nil || !strings.Contains(out, `"path":"/api/v1/videos/123","query":"fields=id"`) {
			t.Fatalf("curl through the proxy: %v: %s", err, out)
		}
		out, err = curl("/v1/proxy/livepush/streams", "-X", "POST", "-d", `{"name":"x"}`)
		if err != nil || !strings.Contains(out, `"path":"/streams"`) {
			t.Fatalf("curl POST through the proxy: %v: %s", err, out)
		}
		calls += 2
	}
	accepted, tokens, refused := api.counts()
	if refused != 0 || accepted != calls {
		t.Errorf("the API accepted %d and refused %d of %d requests; want every one accepted", accepted, refused, calls)
	}
	if tokens < 6 {
		t.Errorf("the API saw %d distinct tokens; want at least 3 per credential (several refreshes)", tokens)
	}

	// Revoked at the provider: the broker's token is refused once, then
	// refreshed and the request sent again, with its body.
	st, h, _ := get(t, httpOver(sock), "/v1/tokens/firework")
	if st != 200 || !p.Revoke(h.AccessToken) {
		t.Fatalf("handout %d; revoking it failed", st)
	}
	out, err := curl("/v1/proxy/firework/v1/items", "-X", "PUT", "-d", "body")
	if err != nil || !strings.Contains(out, `"path":"/api/v1/items"`) {
		t.Fatalf("after a revocation: %v: %s", err, out)
	}
	if _, _, r := api.counts(); r != 1 {
		t.Errorf("the API refused %d requests after the revocation; want 1, the revoked token's", r)
	}

	// A name without an upstream, and one the broker does not have.
	if out, err := curl("/v1/proxy/ingest/x"); err == nil || !strings.Contains(out, "TOKENBROKER_INGEST_UPSTREAM") {
		t.Errorf("no upstream: %v: %s; want 404 naming TOKENBROKER_INGEST_UPSTREAM", err, out)
	}
	if out, err := curl("/v1/proxy/nope/x"); err == nil || !strings.Contains(out, "unknown_credential") {
		t.Errorf("unknown name: %v: %s; want 404 unknown_credential", err, out)
	}
}
