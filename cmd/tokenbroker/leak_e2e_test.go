package main

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker/redistest"
	"github.com/tokenbroker/tokenbroker/internal/tbtest"
	"github.com/tokenbroker/tokenbroker/sources/oauthtest"
)

// No secret and no handed-out token appears anywhere the daemon writes for
// people or machines: its debug log, /v1/credentials, /metrics, the CLI's
// status and check, error answers, the state files and the Redis values;
// only the token files hold a token.
// Both stores, every dialect, and the error paths: provider faults of
// every kind, refused requests, failed refreshes and authorizations.
func TestNoSecretLeaks(t *testing.T) {
	for _, fleet := range []bool{false, true} {
		name := "embedded"
		if fleet {
			name = "fleet"
		}
		t.Run(name, func(t *testing.T) {
			p, environ, sock := e2eSetup(t, oauthtest.Options{AccessLifetime: 3 * time.Second, Rotate: true})
			environ = append(environ, "TOKENBROKER_METRICS_ADDR=127.0.0.1:0", "TOKENBROKER_ENCRYPTION_KEY=k1:"+strings.Repeat("ab", 32))
			// Token files, and a reload signal to a pid file that names no
			// process: their logs and errors must not show the token either.
			files := filepath.Join(filepath.Dir(sock), "tokens")
			pidfile := filepath.Join(filepath.Dir(sock), "reader.pid")
			if err := os.WriteFile(pidfile, []byte("not-a-pid\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			environ = append(environ, "TOKENBROKER_FIREWORK_TOKEN_FILE="+filepath.Join(files, "firework"), "TOKENBROKER_FIREWORK_TOKEN_FILE_FORMAT=json",
				"TOKENBROKER_LIVEPUSH_TOKEN_FILE="+filepath.Join(files, "livepush"), "TOKENBROKER_LIVEPUSH_TOKEN_FILE_SIGNAL=HUP",
				"TOKENBROKER_LIVEPUSH_TOKEN_FILE_PIDFILE="+pidfile)
			var srv *redistest.Server
			if fleet {
				srv = redistest.Start(t)
				environ = append(environ, "TOKENBROKER_REDIS_URL="+srv.URL())
			}
			// An upstream that repeats the Authorization it got, and one
			// that is not there.
			echo := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("X-Echo", r.Header.Get("Authorization"))
				if strings.HasSuffix(r.URL.Path, "/deny") {
					w.WriteHeader(http.StatusUnauthorized)
				}
			}))
			defer echo.Close()
			environ = append(environ, "TOKENBROKER_FIREWORK_UPSTREAM="+echo.URL, "TOKENBROKER_LIVEPUSH_UPSTREAM=http://127.0.0.1:1")
			secrets := secrets(environ)
			if len(secrets) < 5 {
				t.Fatalf("only %d secrets in the environment", len(secrets))
			}
			logs := &tbtest.SyncBuffer{}
			startDaemon(t, environ, sock, logs) // debug logging
			c := httpOver(sock)
			var tokens []string
			fetchAll := func() {
				for _, n := range []string{"firework", "firework-user", "livepush", "ingest", "vsrs"} {
					if st, h, _ := get(t, c, "/v1/tokens/"+n); st == 200 {
						tokens = append(tokens, h.AccessToken)
					}
				}
			}
			fetchAll()
			for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) { // written just after the handout
				b, err := os.ReadFile(filepath.Join(files, "livepush"))
				if err == nil && len(b) > 1 && strings.Contains(strings.Join(tokens, " "), strings.TrimSpace(string(b))) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("the livepush token file holds %d bytes (%v); want the token handed out", len(b), err)
				}
			}
			cli := func(args ...string) string {
				cmd := exec.Command(binary, args...)
				cmd.Env = append(environ, "PATH="+os.Getenv("PATH"))
				out, _ := cmd.CombinedOutput()
				return string(out)
			}

			var answers strings.Builder

			// The proxy: answers, errors, a 401 retried with a fresh token.
			var proxied strings.Builder
			fetchAll() // the token the proxy sends, and after the 401 the fresh one
			for _, path := range []string{"/v1/proxy/firework/ok", "/v1/proxy/firework/deny", "/v1/proxy/firework/%2e%2e/x",
				"/v1/proxy/livepush/x", "/v1/proxy/ingest/x", "/v1/proxy/nope/x"} {
				req, _ := http.NewRequest(http.MethodPost, "http://tokenbroker"+path, strings.NewReader("x"))
				req.Header.Set("X-Tokenbroker", "1")
				req.Header.Set("Authorization", "Bearer "+secrets[0])
				if resp, err := c.Do(req); err == nil {
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					_ = resp.Header.Write(&proxied)
					if want := map[string]int{"/v1/proxy/firework/ok": 200, "/v1/proxy/livepush/x": 502}[path]; want != 0 && resp.StatusCode != want {
						t.Errorf("POST %s: %d %s, want %d", path, resp.StatusCode, b, want)
					}
					if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusUnauthorized {
						answers.Write(b)
					}
				}
			}
			fetchAll()

			// Error paths: every kind of provider fault, on forced refreshes,
			// and what they answer and show while an endpoint is failing.
			for _, f := range []oauthtest.Fault{
				{OAuthError: "invalid_client"}, {Status: 502, Body: "<html>bad gateway</html>", BodySet: true, ContentType: "text/html"},
				{Body: `{"access_token":`, BodySet: true}, {Hangup: true}, {Status: 429, RetryAfter: "1"},
				{Body: `{"error":"server_error","error_description":"try later"}`, BodySet: true},
				{OAuthError: "invalid_grant"}, {ExpiresIn: "abc"},
			} {
				f.Times = 5
				p.Inject(f)
				for _, n := range []string{"firework", "livepush", "ingest", "vsrs", "firework-user"} {
					if err := refreshOver(c, n); err != nil {
						answers.WriteString(err.Error())
					}
				}
				answers.WriteString(cli("status", "--json"))
				p.ClearFaults()
			}
			time.Sleep(6 * time.Second) // background refreshes recover, after a probe (5 s)
			fetchAll()

			// Refused requests.
			for _, path := range []string{"/v1/tokens/nope", "/v1/tokens/..%2f", "/v1/tokens/firework/x", "/metrics", "/v1/credentials"} {
				req, _ := http.NewRequest(http.MethodGet, "http://tokenbroker"+path, nil)
				req.Header.Set("X-Tokenbroker", "1")
				req.Header.Set("Authorization", "Bearer "+secrets[0])
				if resp, err := c.Do(req); err == nil {
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					answers.Write(b)
				}
			}
			for _, path := range []string{"/v1/credentials/firework/authorize", "/v1/credentials/livepush/authorize/complete", "/v1/tokens/nope/refresh"} {
				req, _ := http.NewRequest(http.MethodPost, "http://tokenbroker"+path, strings.NewReader(`{"state":"x","code":"y"}`))
				req.Header.Set("X-Tokenbroker", "1")
				if resp, err := c.Do(req); err == nil {
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					answers.Write(b)
				}
			}
			status, check := cli("status", "--json")+cli("status", "--problems")+cli("status", "fire*", "--json"), cli("check")

			var stored strings.Builder
			_ = filepath.Walk(filepath.Join(filepath.Dir(sock), "state"), func(path string, fi os.FileInfo, err error) error {
				if err == nil && fi.Mode().IsRegular() {
					b, _ := os.ReadFile(path)
					stored.Write(b)
				}
				return nil
			})
			if srv != nil {
				rc := srv.Client()
				keys, err := rc.Keys(context.Background(), "*").Result()
				if err != nil || len(keys) == 0 {
					t.Fatalf("Redis keys: %v %v", keys, err)
				}
				for _, k := range keys {
					if v, err := rc.Get(context.Background(), k).Result(); err == nil {
						stored.WriteString(v)
					}
				}
			}
			if stored.Len() == 0 {
				t.Fatal("nothing stored to check")
			}

			places := map[string]string{
				"the daemon's log":         logs.String(),
				"error answers":            answers.String(),
				"status --json":            status,
				"check":                    check,
				"state files, Redis":       stored.String(),
				"proxied answers' headers": proxied.String(),
			}
			if !strings.Contains(places["error answers"], "tokenbroker_proxy_requests_total") || !strings.Contains(places["error answers"], "no_upstream") {
				t.Errorf("the proxy was not exercised: %.300s", places["error answers"])
			}
			if !strings.Contains(places["error answers"], "tokenbroker_handouts_total") {
				t.Errorf("/metrics was not read: %.200s", places["error answers"])
			}
			for _, s := range append(secrets, tokens...) {
				for where, text := range places {
					if strings.Contains(text, s) {
						t.Errorf("%s shows a secret or token (%d bytes)", where, len(s))
					}
				}
			}
			if !strings.Contains(logs.String(), "cannot signal the reader of the token file") || !strings.Contains(check, "token file") {
				t.Error("the token files' error paths were not exercised")
			}
			if p.Stats().Faults == 0 || len(tokens) < 5 {
				t.Errorf("the error paths were not exercised: %d faults, %d tokens", p.Stats().Faults, len(tokens))
			}
		})
	}
}
