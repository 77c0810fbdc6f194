package main

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"net/url"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/internal/tbtest"
	"github.com/tokenbroker/tokenbroker/sources/oauthtest"
)

// authorizeSetup runs a daemon with one Livepush credential that has no
// refresh token yet, and returns the provider, the socket and the daemon's
// environment.
func authorizeSetup(t *testing.T) (*oauthtest.Provider, string, []string, *daemon) {
	t.Helper()
	p := oauthtest.StartTest(t, oauthtest.Options{AccessLifetime: time.Hour, Rotate: true})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	redirect := "http://127.0.0.1:" + strconv.Itoa(l.Addr().(*net.TCPAddr).Port) + "/callback"
	l.Close()
	p.AddClient(oauthtest.Client{ID: "lp", Secret: "lp-secret-auth", Scopes: []string{"streams.read"}, RedirectURI: redirect, Dialect: oauthtest.Livepush})
	h := tbtest.NewHome(t)
	environ := h.Environ(
		"TOKENBROKER_CREDENTIALS=lp",
		"TOKENBROKER_LP_PROVIDER=livepush",
		"TOKENBROKER_LP_GRANT=refresh_token",
		"TOKENBROKER_LP_TOKEN_URL="+p.TokenURL(oauthtest.Livepush),
		"TOKENBROKER_LP_AUTHORIZE_URL="+p.AuthorizeURL(oauthtest.Livepush),
		"TOKENBROKER_LP_CLIENT_ID=lp",
		"TOKENBROKER_LP_CLIENT_SECRET=lp-secret-auth",
		"TOKENBROKER_LP_SCOPES=streams.read",
		"TOKENBROKER_LP_REDIRECT_URI="+redirect,
	)
	d := startDaemon(t, environ, h.Socket, &tbtest.SyncBuffer{})
	return p, h.Socket, environ, d
}

// runAuthorize starts `tokenbroker authorize` and returns the URL it asks
// the user to open, and a function that waits for it to end.
func runAuthorize(t *testing.T, sock string, stdin io.Reader, args ...string) (string, func() (int, string, string)) {
	t.Helper()
	cmd := exec.Command(binary, append(append([]string{"authorize"}, args...), "lp")...)
	cmd.Env = []string{"TOKENBROKER_SOCKET=" + sock}
	cmd.Stdin = stdin
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var stdout strings.Builder
	r := bufio.NewReader(out)
	link := ""
	for link == "" {
		line, err := r.ReadString('\n')
		stdout.WriteString(line)
		if s := strings.TrimSpace(line); strings.HasPrefix(s, "http") {
			link = s
		}
		if err != nil {
			break
		}
	}
	return link, func() (int, string, string) {
		rest, _ := io.ReadAll(r)
		stdout.Write(rest)
		_ = cmd.Wait()
		return cmd.ProcessState.ExitCode(), stdout.String(), stderr.String()
	}
}

// The newcomer's path: a refresh_token credential without a token waits
// for authorize; authorize (state, PKCE, loopback redirect) stores the
// token in the running broker, which serves it and keeps it fresh; it
// survives a restart. Denial, a forged state and a timeout change nothing
// and say so.
func TestAuthorizeFlow(t *testing.T) {
	p, sock, environ, d := authorizeSetup(t)
	c := httpOver(sock)
	if st, h, _ := get(t, c, "/v1/tokens/lp"); st != 503 || !strings.Contains(h.Description, "authorize") {
		t.Errorf("before authorize: %d %q; want 503 saying to authorize", st, h.Description)
	}

	// The user denies access at the provider.
	p.DenyAuthorization(true)
	link, wait := runAuthorize(t, sock, nil)
	if link == "" {
		_, out, errOut := wait()
		t.Fatalf("authorize printed no URL:\n%s\n%s", out, errOut)
	}
	if resp, err := http.Get(link); err == nil { // the browser
		resp.Body.Close()
	}
	code, _, stderr := wait()
	if code != exitFail || !strings.Contains(stderr, "access_denied") || !strings.Contains(stderr, "nothing changed") {
		t.Errorf("denied: exit %d, %q; want 1 naming access_denied and saying nothing changed", code, stderr)
	}
	p.DenyAuthorization(false)

	// The browser comes back with the wrong state (pasted by hand).
	pr, pw := io.Pipe()
	link, wait = runAuthorize(t, sock, pr, "--paste")
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noFollow.Get(link)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	back, _ := url.Parse(resp.Header.Get("Location"))
	q := back.Query()
	q.Set("state", "forged")
	back.RawQuery = q.Encode()
	io.WriteString(pw, back.String()+"\n")
	pw.Close()
	code, _, stderr = wait()
	if code != exitFail || !strings.Contains(stderr, "state does not match") {
		t.Errorf("forged state: exit %d, %q", code, stderr)
	}

	// Nobody opens the URL.
	_, wait = runAuthorize(t, sock, nil, "--timeout", "1s")
	if code, _, stderr = wait(); code != exitFail || !strings.Contains(stderr, "no answer from the browser within 1s") {
		t.Errorf("timeout: exit %d, %q", code, stderr)
	}
	if st := p.Stats(); st.ByGrant["authorization_code"] != 0 {
		t.Errorf("%d codes exchanged by failed attempts, want 0", st.ByGrant["authorization_code"])
	}

	// The real thing: the browser follows the redirects to the listener.
	link, wait = runAuthorize(t, sock, nil)
	if !strings.Contains(link, "code_challenge_method=S256") || !strings.Contains(link, "state=") {
		t.Errorf("the authorization URL lacks PKCE S256 or a state: %s", link)
	}
	if resp, err := http.Get(link); err != nil {
		t.Fatal(err)
	} else {
		resp.Body.Close()
	}
	code, stdout, stderr := wait()
	if code != exitOK || !strings.Contains(stdout, "lp is authorized") {
		t.Fatalf("authorize: exit %d\n%s\n%s", code, stdout, stderr)
	}
	st, h, _ := get(t, c, "/v1/tokens/lp")
	if st != 200 || !p.Valid(h.AccessToken) {
		t.Fatalf("after authorize: %d %q", st, h.Description)
	}

	// The stored token outlives the daemon, and its refresh token works.
	d.kill()
	startDaemon(t, environ, sock, &tbtest.SyncBuffer{})
	c = httpOver(sock)
	if st, h2, _ := get(t, c, "/v1/tokens/lp"); st != 200 || h2.AccessToken != h.AccessToken {
		t.Errorf("after a restart: %d, same token %v", st, h2.AccessToken == h.AccessToken)
	}
	if err := refreshOver(c, "lp"); err != nil {
		t.Errorf("refresh after authorize: %v", err)
	}
	if s := p.Stats(); s.ReuseEvents != 0 {
		t.Errorf("reuse events %d, want 0", s.ReuseEvents)
	}
}

// authorize for a credential whose grant is not refresh_token says which
// variable to set, not only that it cannot.
func TestAuthorizeNamesTheGrantVariable(t *testing.T) {
	p := oauthtest.StartTest(t, oauthtest.Options{AccessLifetime: time.Hour})
	p.AddClient(oauthtest.Client{ID: "ing", Secret: "ing-secret-auth", Dialect: oauthtest.Ingest})
	dir := t.TempDir()
	sock := filepath.Join(dir, "tb.sock")
	startDaemon(t, []string{"TOKENBROKER_SOCKET=" + sock, "TOKENBROKER_STATE_DIR=" + filepath.Join(dir, "state"),
		"TOKENBROKER_CREDENTIALS=lp", "TOKENBROKER_LP_PROVIDER=ingest", "TOKENBROKER_LP_GRANT=client_credentials",
		"TOKENBROKER_LP_TOKEN_URL=" + p.TokenURL(oauthtest.Ingest), "TOKENBROKER_LP_CLIENT_ID=ing",
		"TOKENBROKER_LP_CLIENT_SECRET=ing-secret-auth"}, sock, &tbtest.SyncBuffer{})
	_, wait := runAuthorize(t, sock, nil)
	if code, _, stderr := wait(); code != exitFail || !strings.Contains(stderr, "TOKENBROKER_LP_GRANT=refresh_token") {
		t.Errorf("exit %d, %q; want 1 naming TOKENBROKER_LP_GRANT=refresh_token", code, stderr)
	}
}
