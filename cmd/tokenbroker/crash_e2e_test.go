package main

import (
	"errors"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker/redistest"
	"github.com/tokenbroker/tokenbroker/internal/crashpoint"
	"github.com/tokenbroker/tokenbroker/internal/tbtest"
	"github.com/tokenbroker/tokenbroker/sources/oauthtest"
)

// rotatingEnviron configures one Livepush refresh_token credential, whose
// provider rotates refresh tokens and revokes the family on reuse, in a
// fleet on redisURL, with its own state dir and socket.
func rotatingEnviron(t *testing.T, p *oauthtest.Provider, refresh, redisURL string) ([]string, string) {
	t.Helper()
	h := tbtest.NewHome(t)
	return h.Environ(
		"TOKENBROKER_REDIS_URL="+redisURL,
		// The dead broker's lock lease ends quickly, so the test need not
		// wait the default 15 s.
		"TOKENBROKER_REDIS_LOCK_TTL=2s",
		"TOKENBROKER_ENCRYPTION_KEY=k1:"+strings.Repeat("3c", 32),
		"TOKENBROKER_CREDENTIALS=lp",
		"TOKENBROKER_LP_PROVIDER=livepush",
		"TOKENBROKER_LP_TOKEN_URL="+p.TokenURL(oauthtest.Livepush),
		"TOKENBROKER_LP_CLIENT_ID=lp",
		"TOKENBROKER_LP_CLIENT_SECRET=lp-secret-crash",
		"TOKENBROKER_LP_REFRESH_TOKEN="+refresh,
	), h.Socket
}

var crashBuild struct {
	once sync.Once
	path string
	out  []byte
	err  error
}

// crashBinary builds, once, the daemon with -tags crashtest: only that
// build honours TOKENBROKER_TEST_CRASH_AT.
func crashBinary(t *testing.T) string {
	t.Helper()
	crashBuild.once.Do(func() {
		crashBuild.path = filepath.Join(filepath.Dir(binary), "tokenbroker-crashtest")
		crashBuild.out, crashBuild.err = exec.Command("go", "build", "-race", "-tags", "crashtest", "-o", crashBuild.path, ".").CombinedOutput()
	})
	if crashBuild.err != nil {
		t.Fatalf("building the crashtest binary: %v\n%s", crashBuild.err, crashBuild.out)
	}
	return crashBuild.path
}

// A release build has no crash points: it refuses to start when asked to
// crash, rather than ignore it silently.
func TestCrashPointNeedsTheCrashtestBuild(t *testing.T) {
	p := oauthtest.StartTest(t, oauthtest.Options{AccessLifetime: time.Hour, Rotate: true})
	env, _ := rotatingEnviron(t, p, "rt", "redis://127.0.0.1:1")
	cmd := exec.Command(binary, "serve")
	cmd.Env = append(env, "TOKENBROKER_TEST_CRASH_AT="+crashpoint.AfterSave)
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "-tags crashtest") {
		t.Errorf("release binary with TOKENBROKER_TEST_CRASH_AT: %v\n%s\nwant a refusal naming -tags crashtest", err, out)
	}
}

// A broker killed with SIGKILL at each step of a refresh, then restarted
// beside a peer: the rotated refresh token is never used twice and never
// lost, except when the process dies holding the provider's answer before
// any write, which no client of a rotating provider can survive (the new
// refresh token existed only in the dead process). Then the broker says
// to authorize again, and the provider sees the one reuse that proves it.
func TestCrashAtEveryRefreshStep(t *testing.T) {
	for _, step := range []string{crashpoint.BeforeRequest, crashpoint.AfterAnswer, crashpoint.BetweenStores, crashpoint.AfterSave} {
		t.Run(step, func(t *testing.T) {
			srv := redistest.Start(t)
			p := oauthtest.StartTest(t, oauthtest.Options{AccessLifetime: time.Hour, Rotate: true})
			p.AddClient(oauthtest.Client{ID: "lp", Secret: "lp-secret-crash", Scopes: []string{"streams.read"}, Dialect: oauthtest.Livepush})
			rt := p.IssueRefreshToken("lp")
			envA, sockA := rotatingEnviron(t, p, rt, srv.URL())
			envB, sockB := rotatingEnviron(t, p, rt, srv.URL())

			// A dies at the step during its first refresh.
			logs := &tbtest.SyncBuffer{}
			cmd := exec.Command(crashBinary(t), "serve")
			cmd.Env = append(envA, "TOKENBROKER_LOG_FORMAT=json", "TOKENBROKER_TEST_CRASH_AT="+step)
			cmd.Stdout, cmd.Stderr = logs, logs
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case err := <-done:
				var ee *exec.ExitError
				if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
					t.Fatalf("serve ended with %v, want SIGKILL at %s\n%s", err, step, logs)
				}
			case <-time.After(60 * time.Second):
				_ = cmd.Process.Kill()
				t.Fatalf("serve never reached crash point %s\n%s", step, logs)
			}
			if !strings.Contains(logs.String(), "crash point "+step) {
				t.Fatalf("the process died elsewhere than at %s:\n%s", step, logs)
			}

			// A restarts; B joins the fleet.
			startDaemon(t, envA, sockA, logs)
			startDaemon(t, envB, sockB, logs)
			cA, cB := httpOver(sockA), httpOver(sockB)
			// Until the dead broker's lease ends, nobody may spend the
			// refresh token; then one broker refreshes (or adopts).
			status, h := 0, handout{}
			for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
				if status, h, _ = get(t, cA, "/v1/tokens/lp"); status == 200 || strings.Contains(h.Description, "authoriz") {
					break
				}
			}
			if step == crashpoint.AfterAnswer {
				if status != 503 || !strings.Contains(h.Description, "authoriz") {
					t.Errorf("after losing the provider's answer: %d %q; want 503 asking to authorize again", status, h.Description)
				}
				if st := p.Stats(); st.ReuseEvents != 1 {
					t.Errorf("reuse events %d; want exactly the 1 that reveals the lost answer", st.ReuseEvents)
				}
				return
			}
			if status != 200 {
				t.Fatalf("after the restart: %d %q; want a token", status, h.Description)
			}
			// A token adopted from the store is served at once, but the dead
			// broker's lease still blocks forced refreshes until it ends.
			time.Sleep(2500 * time.Millisecond)
			for round, c := range []*http.Client{cA, cB, cA} {
				if status, h, _ := get(t, c, "/v1/tokens/lp"); status != 200 || !p.Valid(h.AccessToken) {
					t.Fatalf("round %d: %d %q, want a valid token", round, status, h.Description)
				}
				// The chain goes on: each forced refresh spends the newest
				// refresh token, whichever broker holds the lock.
				if round < 2 {
					if err := refreshOver(c, "lp"); err != nil {
						t.Fatalf("round %d: forced refresh: %v", round, err)
					}
				}
			}
			if st := p.Stats(); st.ReuseEvents != 0 {
				t.Errorf("refresh token reuse events: %d, want 0", st.ReuseEvents)
			}
		})
	}
}
