package contract_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/api"
	"github.com/tokenbroker/tokenbroker/api/client"
	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/internal/tbtest"
	"github.com/tokenbroker/tokenbroker/sources"
)

// fakeBroker implements api.Broker with fixed answers: "svc" has a token,
// "down" has none, "failing" cannot refresh, every other name is unknown.
type fakeBroker struct {
	token  string
	status []broker.Status
	auth   broker.AuthRequest
	done   broker.Status // what CompleteAuthorization returns

	mu        sync.Mutex
	refreshed []string
}

func (f *fakeBroker) Token(_ context.Context, name string) (broker.Handout, error) {
	switch name {
	case "svc":
		return broker.Handout{AccessToken: sources.NewSecret(f.token), Expiry: time.Now().Add(time.Hour)}, nil
	case "down", "failing":
		return broker.Handout{}, &broker.UnavailableError{Name: name, State: broker.StateRetrying,
			Cause: errors.New("provider answered 503"), RetryAt: time.Now().Add(time.Minute)}
	}
	return broker.Handout{}, fmt.Errorf("%w %q", broker.ErrUnknownCredential, name)
}

func (f *fakeBroker) Status() []broker.Status { return f.status }

func (f *fakeBroker) Refresh(ctx context.Context, name string) error {
	f.mu.Lock()
	f.refreshed = append(f.refreshed, name)
	f.mu.Unlock()
	if name == "failing" {
		return fmt.Errorf("refresh %q: %w", name, sources.ErrRejected)
	}
	_, err := f.Token(ctx, name)
	return err
}

func (f *fakeBroker) BeginAuthorization(name string) (broker.AuthRequest, error) {
	if name != "svc" {
		return broker.AuthRequest{}, broker.ErrNotAuthorizable
	}
	return f.auth, nil
}

func (f *fakeBroker) CompleteAuthorization(_ context.Context, name, state, code string) (broker.Status, error) {
	if name != "svc" || state != f.auth.State || code == "" {
		return broker.Status{}, fmt.Errorf("credential %q: %w", name, broker.ErrUnknownState)
	}
	return f.done, nil
}

// serve runs the real API server for f (Listen and Serve, as the daemon
// does) on a new socket until the test ends and returns a client of it.
func serve(t *testing.T, f api.Broker) *client.Client {
	t.Helper()
	opts := api.Options{Path: filepath.Join(tbtest.ShortDir(t), "tb.sock"), Logger: slog.New(slog.DiscardHandler)}
	l, err := api.Listen(opts)
	if err != nil {
		t.Fatal(err)
	}
	srv := api.NewServer(f, opts)
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Shutdown(context.Background()); <-done })
	c := client.New(opts.Path)
	t.Cleanup(func() { c.Close() })
	return c
}

// asAdmin skips a test of the authorize endpoints where the server cannot
// learn who the caller is (peer credentials are read on Linux only): they
// answer only the broker's own user, which this test's process is, and root.
func asAdmin(t *testing.T) {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("the authorize endpoints need the caller's peer credentials, read on Linux only")
	}
}

// fullStatus has every field set, to a value that survives the wire.
func fullStatus(t *testing.T, name string) broker.Status {
	t.Helper()
	at := time.Date(2026, 12, 4, 9, 30, 15, 123456789, time.UTC)
	st := broker.Status{Name: name, Provider: "firework", Grant: "refresh_token", State: broker.StateRetrying,
		ExpiresAt: at, LastRefresh: at.Add(-time.Hour), NextRefresh: at.Add(time.Minute), Failures: 3,
		LastError: `provider answered 503 "busy" ✓`, Action: "wait; it retries by itself", Generation: 1<<53 + 1}
	v := reflect.ValueOf(st)
	for i := range v.NumField() {
		if v.Field(i).IsZero() {
			t.Fatalf("broker.Status.%s is not set in this test: set it, send it (api/wire.go) and decode it (client.CredentialStatus)",
				v.Type().Field(i).Name)
		}
	}
	return st
}

// sameStatus compares every field of the client's status with the
// server's by name, both ways: a field on one side only is a failure.
func sameStatus(t *testing.T, what string, got client.CredentialStatus, want broker.Status) {
	t.Helper()
	g, w := reflect.ValueOf(got), reflect.ValueOf(want)
	for i := range w.NumField() {
		name := w.Type().Field(i).Name
		gf := g.FieldByName(name)
		if !gf.IsValid() {
			t.Errorf("%s: client.CredentialStatus has no field %s: the client does not decode it", what, name)
			continue
		}
		if !sameValue(gf, w.Field(i)) {
			t.Errorf("%s: %s = %v after the round trip; want %v", what, name, gf.Interface(), w.Field(i).Interface())
		}
	}
	for i := range g.NumField() {
		if name := g.Type().Field(i).Name; !w.FieldByName(name).IsValid() {
			t.Errorf("%s: client.CredentialStatus.%s has no counterpart in broker.Status", what, name)
		}
	}
}

func sameValue(got, want reflect.Value) bool {
	if gt, ok := got.Interface().(time.Time); ok {
		return gt.Equal(want.Interface().(time.Time))
	}
	if want.Kind() == reflect.String {
		return got.String() == want.String() // broker.State is a string on the wire
	}
	return got.Interface() == want.Interface()
}

// Every field of a credential's status survives the listing and the
// answer to a completed authorization; so does a status with only a name.
func TestStatusRoundTrip(t *testing.T) {
	full, bare := fullStatus(t, "svc"), broker.Status{Name: "bare"}
	f := &fakeBroker{status: []broker.Status{bare, full}, done: full,
		auth: broker.AuthRequest{State: "st-1"}}
	c := serve(t, f)
	ctx := context.Background()

	list, err := c.Credentials(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 {
		t.Fatalf("Credentials listed %d; want 2", len(list))
	}
	sameStatus(t, "listing, bare", list[0], bare)
	sameStatus(t, "listing, full", list[1], full)

	asAdmin(t)

	st, err := c.CompleteAuthorization(ctx, "svc", "st-1", "code")
	if err != nil {
		t.Fatal(err)
	}
	sameStatus(t, "completed authorization", st, full)
}

// The states go on the wire as the client documents them
// (client.CredentialStatus.State), whatever broker calls its constants.
func TestStateNames(t *testing.T) {
	want := map[broker.State]string{broker.StatePending: "pending", broker.StateOK: "ok", broker.StateRetrying: "retrying",
		broker.StateReauthorize: "reauthorize", broker.StateRejected: "rejected"}
	f := &fakeBroker{}
	for st := range want {
		f.status = append(f.status, broker.Status{Name: "c-" + string(st), State: st})
	}
	list, err := serve(t, f).Credentials(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for i, got := range list {
		if w := want[f.status[i].State]; got.State != w {
			t.Errorf("state %q went on the wire as %q; want %q", f.status[i].State, got.State, w)
		}
	}
}

func TestAuthRequestRoundTrip(t *testing.T) {
	want := broker.AuthRequest{URL: "https://idp.example/authorize?client_id=a&state=st-1", RedirectURI: "http://127.0.0.1:8080/cb",
		State: "st-1", Expires: time.Date(2026, 12, 4, 10, 0, 0, 0, time.FixedZone("CET", 3600))}
	if v := reflect.ValueOf(want); v.NumField() != 4 {
		t.Fatalf("broker.AuthRequest has %d fields; this test knows 4: send the new one (api/wire.go), decode it (client.AuthRequest) and check it here", v.NumField())
	}
	asAdmin(t)
	got, err := serve(t, &fakeBroker{auth: want}).BeginAuthorization(context.Background(), "svc")
	if err != nil {
		t.Fatal(err)
	}
	if got.URL != want.URL || got.RedirectURI != want.RedirectURI || got.State != want.State || !got.ExpiresAt.Equal(want.Expires) {
		t.Errorf("BeginAuthorization = %+v; want %+v", got, want)
	}
}

// The handout keeps a token with characters JSON must escape intact.
func TestHandoutRoundTrip(t *testing.T) {
	const tok = "a/b+c==\"\\\u2028é\x01"
	got, err := serve(t, &fakeBroker{token: tok}).Token(context.Background(), "svc")
	if err != nil {
		t.Fatal(err)
	}
	if got.AccessToken != tok || got.TokenType != "Bearer" || got.ExpiresIn < 3590 || got.ExpiresIn > 3600 ||
		time.Until(got.ExpiresAt) < 59*time.Minute || got.ExpiresAt.Nanosecond() != 0 {
		t.Errorf("Token = %q %q %d %v; want the fake's Bearer token for an hour, its expiry in whole seconds",
			got.AccessToken, got.TokenType, got.ExpiresIn, got.ExpiresAt)
	}
}

// Every error the server answers a handout or a refresh with decodes to a
// *client.Error with its status and code, naming the credential.
func TestErrors(t *testing.T) {
	f := &fakeBroker{token: "tok"}
	c := serve(t, f)
	ctx := context.Background()
	for _, tc := range []struct {
		refresh bool
		name    string
		status  int
		code    string
	}{
		{false, "nope", 404, "unknown_credential"},
		{false, "down", 503, "token_unavailable"},
		{false, "Bad/Name", 400, "invalid_name"},
		{false, "", 400, "invalid_name"},
		{false, "..", 400, "invalid_name"},
		{true, "nope", 404, "unknown_credential"},
		{true, "down", 503, "token_unavailable"},
		{true, "failing", 502, "refresh_failed"},
		{true, "Bad/Name", 400, "invalid_name"},
	} {
		var err error
		if tc.refresh {
			err = c.Refresh(ctx, tc.name)
		} else {
			_, err = c.Token(ctx, tc.name)
		}
		var e *client.Error
		if !errors.As(err, &e) {
			t.Fatalf("(refresh %v) %q: %v; want a *client.Error", tc.refresh, tc.name, err)
		}
		if e.Status != tc.status || e.Code != tc.code || e.Description == "" || e.Credential != tc.name {
			t.Errorf("(refresh %v) %q: %+v; want %d %s with a description", tc.refresh, tc.name, e, tc.status, tc.code)
		}
		if !strings.Contains(err.Error(), strconv.Quote(tc.name)) {
			t.Errorf("(refresh %v) %q: message %q does not name the credential", tc.refresh, tc.name, err)
		}
	}
	if err := c.Refresh(ctx, "svc"); err != nil {
		t.Errorf("Refresh(svc): %v", err)
	}

	asAdmin(t)
	if _, err := c.BeginAuthorization(ctx, "down"); !isCode(err, 409, "not_authorizable") {
		t.Errorf("BeginAuthorization(down): %v; want 409 not_authorizable", err)
	}
	if _, err := c.CompleteAuthorization(ctx, "svc", "wrong", "code"); !isCode(err, 400, "invalid_state") {
		t.Errorf("CompleteAuthorization with a wrong state: %v; want 400 invalid_state", err)
	}
}

func isCode(err error, status int, code string) bool {
	var e *client.Error
	return errors.As(err, &e) && e.Status == status && e.Code == code
}

// The listing has no size limit as a whole: 6,000 credentials (over 2 MB,
// written by the server as it encodes them) are read in full and in order.
func TestCredentialsAtScale(t *testing.T) {
	const n = 6000
	f := &fakeBroker{status: make([]broker.Status, n)}
	for i := range f.status {
		f.status[i] = broker.Status{Name: fmt.Sprintf("c%05d", i), Provider: "firework", Grant: "client_credentials",
			State: broker.StateRetrying, Failures: i, LastError: strings.Repeat("provider answered 503; ", 10)}
	}
	st, err := serve(t, f).Credentials(context.Background())
	if err != nil {
		t.Fatalf("Credentials: %v", err)
	}
	if len(st) != n {
		t.Fatalf("Credentials listed %d, want %d", len(st), n)
	}
	for i, s := range st {
		if want := fmt.Sprintf("c%05d", i); s.Name != want || s.Failures != i || s.State != "retrying" {
			t.Fatalf("entry %d = %+v, want %s with %d failures", i, s, want, i)
		}
	}
}

// rotatingBroker hands out generation n of "svc"'s token; a refresh makes
// the next one.
type rotatingBroker struct {
	fakeBroker
	gen atomic.Int64
}

func (r *rotatingBroker) Token(_ context.Context, name string) (broker.Handout, error) {
	if name != "svc" {
		return broker.Handout{}, fmt.Errorf("%w %q", broker.ErrUnknownCredential, name)
	}
	return broker.Handout{AccessToken: sources.NewSecret("tok-" + strconv.FormatInt(r.gen.Load(), 10)), Expiry: time.Now().Add(time.Hour)}, nil
}

func (r *rotatingBroker) Refresh(ctx context.Context, name string) error {
	if name == "svc" {
		r.gen.Add(1)
	}
	_, err := r.Token(ctx, name)
	return err
}

// The client's transport with the real server's limits on forced
// refreshes: an API's 401 forces one refresh; a second 401 soon after is
// answered 429 refresh_limited, and the client then uses the token the
// broker holds now (another process refreshed it) instead of failing.
func TestTransportAgainstServer(t *testing.T) {
	b := &rotatingBroker{}
	b.gen.Store(1)
	var accept atomic.Int64
	accept.Store(2)
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer tok-"+strconv.FormatInt(accept.Load(), 10) {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		fmt.Fprint(w, "ok")
	}))
	defer upstream.Close()
	hc := serve(t, b).HTTPClient("svc")
	get := func() int {
		t.Helper()
		resp, err := hc.Get(upstream.URL)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}

	if st := get(); st != 200 || b.gen.Load() != 2 {
		t.Fatalf("first request: %d at generation %d; want 200 after one forced refresh (generation 2)", st, b.gen.Load())
	}
	b.gen.Store(3) // another process refreshed the credential
	accept.Store(3)
	if st := get(); st != 200 || b.gen.Load() != 3 {
		t.Errorf("after a refresh elsewhere: %d at generation %d; want 200 with the broker's token, the forced refresh limited (generation 3)", st, b.gen.Load())
	}
}
