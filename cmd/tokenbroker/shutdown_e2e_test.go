package main

import (
	"context"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker/redistest"
	"github.com/tokenbroker/tokenbroker/internal/tbtest"
	"github.com/tokenbroker/tokenbroker/sources/oauthtest"
)

// SIGTERM while a refresh holds the fleet lock and a provider hangs: the
// daemon finishes within its bound, exits 0, removes its socket and
// releases the lock (peers need not wait out the lease). A second signal
// exits at once.
func TestGracefulShutdown(t *testing.T) {
	srv := redistest.Start(t)
	rc := srv.Client()
	p := oauthtest.StartTest(t, oauthtest.Options{AccessLifetime: time.Hour, Rotate: true})
	p.AddClient(oauthtest.Client{ID: "lp", Secret: "lp-secret-crash", Scopes: []string{"streams.read"}, Dialect: oauthtest.Livepush})
	environ, sock := rotatingEnviron(t, p, p.IssueRefreshToken("lp"), srv.URL())
	environ = append(environ, "TOKENBROKER_REDIS_LOCK_TTL=60s")
	locks := func() int {
		keys, _ := rc.Keys(context.Background(), "*:lock").Result()
		return len(keys)
	}
	hang := func(logs *tbtest.SyncBuffer) {
		t.Helper()
		p.Inject(oauthtest.Fault{Delay: time.Minute})
		done := make(chan error, 1)
		go func() { done <- refreshOver(httpOver(sock), "lp") }()
		for deadline := time.Now().Add(30 * time.Second); locks() == 0; time.Sleep(20 * time.Millisecond) {
			select {
			case err := <-done:
				t.Fatalf("the forced refresh ended (%v) before it took the lock; provider saw %+v\n%s", err, p.Stats(), logs)
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("the refresh never took the lock; provider saw %+v\n%s", p.Stats(), logs)
			}
		}
	}

	logs := &tbtest.SyncBuffer{}
	d := startDaemon(t, environ, sock, logs)
	if st, _, _ := get(t, httpOver(sock), "/v1/tokens/lp"); st != 200 {
		t.Fatalf("first handout: %d", st)
	}
	hang(logs)
	start := time.Now()
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-d.done:
		d.done <- err
		if err != nil {
			t.Errorf("SIGTERM: %v, want exit 0\n%s", err, logs)
		}
	case <-time.After(shutdownTimeout + 10*time.Second):
		t.Fatalf("still running %s after SIGTERM", shutdownTimeout+10*time.Second)
	}
	t.Logf("graceful stop with a refresh hung on the provider: %s", time.Since(start).Round(time.Millisecond))
	if n := locks(); n != 0 {
		t.Errorf("%d refresh locks left in Redis after a graceful stop; want them released", n)
	}
	if _, err := httpOver(sock).Get("http://tokenbroker/healthz"); err == nil {
		t.Error("the socket still answers after the stop")
	}
	p.ClearFaults()

	// A second signal: out now, exit 1.
	logs2 := &tbtest.SyncBuffer{}
	d = startDaemon(t, environ, sock, logs2)
	hang(logs2)
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	time.Sleep(300 * time.Millisecond)
	_ = d.cmd.Process.Signal(syscall.SIGINT)
	select {
	case err := <-d.done:
		d.done <- err
		if d.cmd.ProcessState.ExitCode() != exitFail || !strings.Contains(logs2.String(), "second signal") {
			t.Errorf("second signal: exit %d; want %d and a line saying so\n%s", d.cmd.ProcessState.ExitCode(), exitFail, logs2)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a second signal did not stop the daemon at once")
	}
	p.ClearFaults()
}
