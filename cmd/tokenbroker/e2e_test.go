package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/internal/tbtest"
	"github.com/tokenbroker/tokenbroker/sources/oauthtest"
)

// binary is the tokenbroker command built once for the end-to-end tests.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "tb-bin")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "tokenbroker")
	if out, err := exec.Command("go", "build", "-race", "-o", binary, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building tokenbroker: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// daemon is a running `tokenbroker serve` process.
type daemon struct {
	cmd  *exec.Cmd
	sock string
	logs *tbtest.SyncBuffer
	done chan error
}

// startDaemon runs serve with environ and waits until the socket answers.
func startDaemon(t *testing.T, environ []string, sock string, logs *tbtest.SyncBuffer) *daemon {
	t.Helper()
	return runDaemon(t, exec.Command(binary, "serve"), "debug", environ, sock, logs)
}

// runDaemon starts cmd, a serve, with environ, JSON logs at level into
// logs, and waits until its socket answers. The test's end kills it.
func runDaemon(t *testing.T, cmd *exec.Cmd, level string, environ []string, sock string, logs *tbtest.SyncBuffer) *daemon {
	t.Helper()
	cmd.Env = append(slices.Clone(environ), "PATH="+os.Getenv("PATH"), "TOKENBROKER_LOG_FORMAT=json", "TOKENBROKER_LOG_LEVEL="+level)
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d := &daemon{cmd: cmd, sock: sock, logs: logs, done: make(chan error, 1)}
	go func() { d.done <- cmd.Wait() }()
	t.Cleanup(d.kill)
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			return d
		}
		select {
		case err := <-d.done:
			d.done <- err
			t.Fatalf("serve exited before listening: %v\n%s", err, logs)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("socket %s not ready after 20s\n%s", sock, logs)
		}
	}
}

func (d *daemon) kill() {
	if d.cmd.ProcessState == nil {
		_ = d.cmd.Process.Kill()
		<-d.done
		d.done <- nil
	}
}

func httpOver(sock string) *http.Client {
	return &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		}}}
}

type handout struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int    `json:"expires_in"`
	ExpiresAt   string `json:"expires_at"`
	Error       string `json:"error"`
	Description string `json:"error_description"`
}

func get(t *testing.T, c *http.Client, path string) (int, handout, http.Header) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://tokenbroker"+path, nil)
	req.Header.Set("X-Tokenbroker", "1")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	var h handout
	if err := json.NewDecoder(resp.Body).Decode(&h); err != nil {
		t.Fatalf("GET %s: body is not JSON: %v", path, err)
	}
	return resp.StatusCode, h, resp.Header
}

// secrets lists every value that must never appear in the daemon's logs.
func secrets(environ []string) []string {
	var out []string
	for _, kv := range environ {
		k, v, _ := strings.Cut(kv, "=")
		if strings.HasSuffix(k, "_SECRET") || strings.HasSuffix(k, "_REFRESH_TOKEN") || strings.HasSuffix(k, "_PASSWORD") {
			out = append(out, v)
		}
	}
	return out
}

// e2eSetup starts a provider and returns the demo's configuration of a
// daemon for it, in a Home of its own, and the daemon's socket.
func e2eSetup(t *testing.T, opts oauthtest.Options) (*oauthtest.Provider, []string, string) {
	t.Helper()
	p := oauthtest.StartTest(t, opts)
	h := tbtest.NewHome(t)
	return p, h.Rehome(demoEnviron(p, h.Dir)), h.Socket
}

// The daemon serves a valid Bearer token for every dialect, keeps them fresh
// in the background, survives kill -9 without reusing a rotated refresh
// token, stops cleanly on SIGTERM, and never logs a secret or token.
func TestDaemonEndToEnd(t *testing.T) {
	p, environ, sock := e2eSetup(t, oauthtest.Options{AccessLifetime: 4 * time.Second, Rotate: true})
	logs := &tbtest.SyncBuffer{}
	d := startDaemon(t, environ, sock, logs)
	c := httpOver(sock)
	names := []string{"firework", "firework-user", "livepush", "ingest", "vsrs"}
	var handedOut []string

	check := func(round string) {
		for _, n := range names {
			status, h, hdr := get(t, c, "/v1/tokens/"+n)
			if status != 200 || h.TokenType != "Bearer" || hdr.Get("Cache-Control") != "no-store" {
				t.Fatalf("%s: %s: status %d, token_type %q, Cache-Control %q (%s: %s)", round, n, status, h.TokenType, hdr.Get("Cache-Control"), h.Error, h.Description)
			}
			if !p.Valid(h.AccessToken) {
				t.Fatalf("%s: %s: the provider says the handed-out token is not valid", round, n)
			}
			if exp, err := time.Parse(time.RFC3339, h.ExpiresAt); err != nil || h.ExpiresIn < 0 || time.Until(exp) < -time.Second {
				t.Errorf("%s: %s: expires_in %d, expires_at %q; want a future expiry", round, n, h.ExpiresIn, h.ExpiresAt)
			}
			handedOut = append(handedOut, h.AccessToken)
		}
	}
	check("first")
	// Four-second tokens: by 7 s every credential has been refreshed in the
	// background at least once.
	refreshed := p.Stats().Issued
	time.Sleep(7 * time.Second)
	if got := p.Stats().Issued; got < refreshed+len(names) {
		t.Errorf("provider issued %d tokens in 7s of 4s tokens; want at least %d (proactive refresh)", got-refreshed, len(names))
	}
	check("after background refreshes")

	// kill -9, restart on the same state: the rotated refresh tokens on disk
	// are used, never the stale ones in the environment. New token requests
	// are held before the provider acts on them, so the kill cannot land
	// between a rotation and its save (that loss is
	// TestCrashAtEveryRefreshStep's after-answer case).
	p.Inject(oauthtest.Fault{Delay: time.Minute, Times: 1 << 30})
	time.Sleep(200 * time.Millisecond) // answers already given are saved
	d.kill()
	p.ClearFaults()
	d = startDaemon(t, environ, sock, logs)
	c = httpOver(sock)
	check("after kill -9")
	time.Sleep(5 * time.Second)
	check("after refreshes past the restart")
	if st := p.Stats(); st.ReuseEvents != 0 {
		t.Fatalf("refresh token reuse events = %d; want 0", st.ReuseEvents)
	}

	if status, h, _ := get(t, c, "/v1/tokens/nope"); status != 404 || h.Error != "unknown_credential" {
		t.Errorf("unknown credential: %d %q; want 404 unknown_credential", status, h.Error)
	}
	if status, h, _ := get(t, c, "/v1/tokens/..%2f..%2fetc"); status != 400 && status != 404 {
		t.Errorf("odd name: %d %q; want 400", status, h.Error)
	}

	// Without the header (a proxy or a browser would not send it): refused.
	if resp, err := c.Get("http://tokenbroker/v1/tokens/firework"); err != nil || resp.StatusCode != 400 {
		t.Errorf("GET without X-Tokenbroker: %v %v; want 400 header_required", err, resp)
	} else {
		resp.Body.Close()
	}
	req, _ := http.NewRequest(http.MethodGet, "http://tokenbroker/v1/credentials", nil)
	req.Header.Set("X-Tokenbroker", "1")
	resp, err := c.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /v1/credentials: %v", err)
	}
	var body bytes.Buffer
	_, _ = body.ReadFrom(resp.Body)
	resp.Body.Close()
	credentialsBody := body.String()
	for _, n := range names {
		if !strings.Contains(credentialsBody, `"name":"`+n+`"`) {
			t.Errorf("/v1/credentials does not list %s: %s", n, credentialsBody)
		}
	}

	// The token command prints the token and a newline.
	cmd := exec.Command(binary, "token", "livepush")
	cmd.Env = []string{"TOKENBROKER_SOCKET=" + sock}
	out, err := cmd.Output()
	if err != nil || !strings.HasSuffix(string(out), "\n") || !p.Valid(strings.TrimSpace(string(out))) {
		t.Errorf("tokenbroker token livepush = %q, %v; want a valid token and a newline", out, err)
	}
	handedOut = append(handedOut, strings.TrimSpace(string(out)))

	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-d.done:
		if err != nil {
			t.Errorf("serve exited with %v after SIGTERM; want 0", err)
		}
		d.done <- err
	case <-time.After(15 * time.Second):
		t.Fatal("serve did not exit within 15s of SIGTERM")
	}
	if _, err := os.Stat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket still exists after a clean shutdown: %v", err)
	}

	text := logs.String() + credentialsBody
	for _, s := range append(secrets(environ), handedOut...) {
		if s != "" && strings.Contains(text, s) {
			t.Errorf("the daemon's logs or /v1/credentials contain a secret or token (%.6s…)", s)
		}
	}
	if !strings.Contains(text, `"token refreshed"`) {
		t.Errorf("logs have no refresh line:\n%s", text)
	}
}

// A provider that rejects a refresh token puts the credential in
// reauthorize; handouts answer 503 saying what to do; others keep working.
func TestDaemonReauthorizeIs503(t *testing.T) {
	p, environ, sock := e2eSetup(t, oauthtest.Options{AccessLifetime: time.Hour, Rotate: true})
	for i, kv := range environ {
		if strings.HasPrefix(kv, "TOKENBROKER_LIVEPUSH_REFRESH_TOKEN=") {
			environ[i] = "TOKENBROKER_LIVEPUSH_REFRESH_TOKEN=revoked-or-unknown"
		}
	}
	d := startDaemon(t, environ, sock, &tbtest.SyncBuffer{})
	c := httpOver(sock)
	status, h, _ := get(t, c, "/v1/tokens/livepush")
	if status != 503 || h.Error != "token_unavailable" || !strings.Contains(h.Description, "authorize") || !strings.Contains(h.Description, "livepush") {
		t.Errorf("livepush with a bad refresh token: %d %q %q; want 503 naming the credential and saying to authorize", status, h.Error, h.Description)
	}
	if status, _, _ := get(t, c, "/v1/tokens/vsrs"); status != 200 {
		t.Errorf("vsrs: status %d; one failing credential must not affect others", status)
	}
	_ = p
	d.kill()
}

// A bad configuration lists every problem, each naming its variable, and
// exits 2 without starting.
func TestServeRejectsBadConfiguration(t *testing.T) {
	cmd := exec.Command(binary, "serve")
	cmd.Env = []string{
		"TOKENBROKER_CREDENTIALS=ok, Bad Name, fw",
		"TOKENBROKER_FW_PROVIDER=firework",
		"TOKENBROKER_FW_GRANT=password",
		"TOKENBROKER_REFRESH_AT=2",
		"TOKENBROKER_STATE_DIR=" + t.TempDir(),
	}
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 {
		t.Fatalf("exit = %v; want 2\n%s", err, out)
	}
	for _, want := range []string{"TOKENBROKER_CREDENTIALS", "TOKENBROKER_REFRESH_AT", "TOKENBROKER_FW_GRANT", "TOKENBROKER_OK_CLIENT_ID"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output does not name %s:\n%s", want, out)
		}
	}
}

// keepRunLogs keeps what a fleet run leaves to read in a new directory
// whose name starts with prefix and which it names in the test's log: the
// timeline of what the test did (<what>.log) and each broker's log
// (broker-<name>.log).
func keepRunLogs(t *testing.T, prefix, what string, timeline *tbtest.SyncBuffer, logs map[string]*tbtest.SyncBuffer) {
	t.Helper()
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		return
	}
	_ = os.WriteFile(filepath.Join(dir, what+".log"), []byte(timeline.String()), 0o600)
	for name, l := range logs {
		_ = os.WriteFile(filepath.Join(dir, "broker-"+name+".log"), []byte(l.String()), 0o600)
	}
	t.Logf("the %s and the brokers' logs are in %s", what, dir)
}
