package client_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/api/client"
)

const accessToken = "client-test/access+token=="

// fakeBroker is served by standIn: "svc" has a token, "down" has none,
// every other name is unknown.
type fakeBroker struct {
	mu        sync.Mutex
	refreshed []string
}

func (f *fakeBroker) Token(name string) (string, time.Time, error) {
	switch name {
	case "svc":
		return accessToken, time.Now().Add(time.Hour), nil
	case "down":
		return "", time.Time{}, errUnavailable
	}
	return "", time.Time{}, errUnknown
}

func (f *fakeBroker) Status() []client.CredentialStatus {
	return []client.CredentialStatus{{Name: "svc", Provider: "firework", Grant: "client_credentials", State: "ok",
		ExpiresAt: time.Now().Add(time.Hour), Generation: 7}}
}

func (f *fakeBroker) Refresh(name string) error {
	f.mu.Lock()
	f.refreshed = append(f.refreshed, name)
	f.mu.Unlock()
	_, _, err := f.Token(name)
	return err
}

func socketPath(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "tbc")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return filepath.Join(dir, "tb.sock")
}

// serve runs h on a new Unix socket until the test ends.
func serve(t *testing.T, h http.Handler) string {
	t.Helper()
	p := socketPath(t)
	l, err := net.Listen("unix", p)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(l) }()
	t.Cleanup(func() { srv.Close(); <-done })
	return p
}

func newClient(t *testing.T, socket string) *client.Client {
	c := client.New(socket)
	t.Cleanup(func() { c.Close() })
	return c
}

func brokerSocket(t *testing.T, f *fakeBroker) string {
	return serve(t, standIn(f))
}

func TestDefaultSocket(t *testing.T) {
	t.Setenv("TOKENBROKER_SOCKET", "/somewhere/tb.sock")
	t.Setenv("XDG_RUNTIME_DIR", "/run/user/1000")
	if got := client.DefaultSocket(); got != "/somewhere/tb.sock" {
		t.Errorf("with TOKENBROKER_SOCKET: %q, want /somewhere/tb.sock", got)
	}
	t.Setenv("TOKENBROKER_SOCKET", "")
	want := "/run/user/1000/tokenbroker/tokenbroker.sock"
	if os.Geteuid() == 0 {
		want = "/run/tokenbroker/tokenbroker.sock"
	}
	if got := client.DefaultSocket(); got != want {
		t.Errorf("with XDG_RUNTIME_DIR: %q, want %q", got, want)
	}
	t.Setenv("XDG_RUNTIME_DIR", "")
	want = "/tmp/tokenbroker-" + strconv.Itoa(os.Geteuid()) + "/tokenbroker.sock"
	if os.Geteuid() == 0 {
		want = "/run/tokenbroker/tokenbroker.sock"
	}
	if got := client.DefaultSocket(); got != want {
		t.Errorf("without XDG_RUNTIME_DIR: %q, want %q", got, want)
	}
}

func TestToken(t *testing.T) {
	c := newClient(t, brokerSocket(t, &fakeBroker{}))
	tok, err := c.Token(context.Background(), "svc")
	if err != nil {
		t.Fatalf("Token: %v", err)
	}
	if tok.AccessToken != accessToken || tok.TokenType != "Bearer" || tok.ExpiresIn < 3590 || tok.ExpiresIn > 3600 ||
		time.Until(tok.ExpiresAt) < 59*time.Minute {
		t.Errorf("Token = %q %q %d %v, want the fake's Bearer token for an hour", tok.AccessToken, tok.TokenType, tok.ExpiresIn, tok.ExpiresAt)
	}
	for _, s := range []string{fmt.Sprint(tok), fmt.Sprintf("%+v", tok), fmt.Sprintf("%#v", tok)} {
		if strings.Contains(s, accessToken) {
			t.Errorf("printing a Token reveals it: %s", s)
		}
	}
}

func TestSendsMarkerHeader(t *testing.T) {
	headers := make(chan http.Header, 3)
	p := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		headers <- r.Header.Clone()
		switch {
		case r.Method == "POST":
			w.WriteHeader(http.StatusNoContent)
		case r.URL.Path == "/v1/credentials":
			fmt.Fprint(w, `{"credentials":[]}`)
		default:
			fmt.Fprint(w, `{"access_token":"x","token_type":"Bearer","expires_in":60,"expires_at":"2030-01-01T00:00:00Z"}`)
		}
	}))
	c := newClient(t, p)
	ctx := context.Background()
	if _, err := c.Token(ctx, "svc"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Credentials(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Refresh(ctx, "svc"); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if got := (<-headers).Get(client.Header); got != "1" {
			t.Errorf("%s = %q, want 1", client.Header, got)
		}
	}
}

func TestUnreachable(t *testing.T) {
	p := socketPath(t)
	_, err := newClient(t, p).Token(context.Background(), "svc")
	want := "cannot reach tokenbroker at " + p + ": is it running? (set TOKENBROKER_SOCKET)"
	if err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("Token without a broker = %v, want an error starting %q", err, want)
	}
	if !errors.Is(err, client.ErrUnreachable) {
		t.Errorf("error %v does not match ErrUnreachable", err)
	}
}

func TestCredentialsAndRefresh(t *testing.T) {
	f := &fakeBroker{}
	c := newClient(t, brokerSocket(t, f))
	ctx := context.Background()
	st, err := c.Credentials(ctx)
	if err != nil {
		t.Fatalf("Credentials: %v", err)
	}
	if len(st) != 1 || st[0].Name != "svc" || st[0].State != "ok" || st[0].Provider != "firework" || st[0].Generation != 7 || st[0].ExpiresAt.IsZero() {
		t.Errorf("Credentials = %+v, want the fake's svc", st)
	}
	if err := c.Refresh(ctx, "svc"); err != nil {
		t.Errorf("Refresh(svc): %v", err)
	}
	var e *client.Error
	if err := c.Refresh(ctx, "nope"); !errors.As(err, &e) || e.Status != 404 {
		t.Errorf("Refresh(nope) = %v, want a 404 *client.Error", err)
	}
	if len(f.refreshed) != 2 {
		t.Errorf("refreshed %v, want svc and nope", f.refreshed)
	}
}

func TestForeignErrorAnswer(t *testing.T) {
	p := serve(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "oops: body-secret", http.StatusInternalServerError)
	}))
	_, err := newClient(t, p).Token(context.Background(), "svc")
	var e *client.Error
	if !errors.As(err, &e) || e.Status != 500 {
		t.Fatalf("Token = %v, want a 500 *client.Error", err)
	}
	if strings.Contains(err.Error(), "body-secret") {
		t.Errorf("error %q quotes a body it does not understand", err)
	}
}

func TestContextCanceled(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	p := serve(t, http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := newClient(t, p).Token(ctx, "svc"); !errors.Is(err, context.Canceled) {
		t.Errorf("Token with a canceled context = %v, want context.Canceled", err)
	}
}

// A listing that is not one, or an entry over 1 MiB, is an error that
// names the request and quotes nothing of the answer; members the client
// does not know are skipped.
func TestCredentialsBadListing(t *testing.T) {
	huge := `{"name":"big","last_error":"` + strings.Repeat("x", 2<<20) + `"}`
	for _, tc := range []struct {
		name, body string
		want       int // entries, or -1 for an error
	}{
		{"not JSON", "<html>body-secret</html>", -1},
		{"an array", `[{"name":"a"}]`, -1},
		{"credentials not an array", `{"credentials":{"name":"body-secret"}}`, -1},
		{"cut short", `{"credentials":[{"name":"a"},{"name":"b"`, -1},
		{"an entry over 1 MiB", `{"credentials":[` + huge + `]}`, -1},
		{"empty", `{"credentials":[]}`, 0},
		{"other members", `{"version":"2","credentials":[{"name":"a"}],"next":null}`, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := serve(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				_, _ = w.Write([]byte(tc.body))
			}))
			st, err := newClient(t, p).Credentials(context.Background())
			if tc.want < 0 {
				if err == nil {
					t.Fatalf("Credentials = %d entries, want an error", len(st))
				}
				if !strings.Contains(err.Error(), "GET /v1/credentials") || strings.Contains(err.Error(), "body-secret") || len(err.Error()) > 300 {
					t.Errorf("error %q: want the request named and nothing of the answer quoted", err)
				}
				return
			}
			if err != nil || len(st) != tc.want {
				t.Errorf("Credentials = %d entries, %v; want %d", len(st), err, tc.want)
			}
		})
	}
}
