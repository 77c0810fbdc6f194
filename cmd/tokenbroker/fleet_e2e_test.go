package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tokenbroker/tokenbroker/broker/redistest"
	"github.com/tokenbroker/tokenbroker/internal/tbtest"
	"github.com/tokenbroker/tokenbroker/sources/oauthtest"
)

// peerEnviron is environ for a second daemon of the same fleet: its own
// socket and state dir.
func peerEnviron(t *testing.T, environ []string) ([]string, string) {
	t.Helper()
	h := tbtest.NewHome(t)
	return h.Rehome(environ), h.Socket
}

// A daemon joining a running fleet starts warm: it serves every credential
// the fleet's token without a provider request. (Hour-long tokens, so that
// no scheduled refresh of the first daemon can be counted.)
func TestJoiningDaemonStartsWarm(t *testing.T) {
	srv := redistest.Start(t)
	p, environ, sock1 := e2eSetup(t, oauthtest.Options{AccessLifetime: time.Hour, Rotate: true})
	environ = append(environ, "TOKENBROKER_REDIS_URL="+srv.URL(), "TOKENBROKER_ENCRYPTION_KEY=k1:"+strings.Repeat("5a", 32))
	environ2, sock2 := peerEnviron(t, environ)
	logs := &tbtest.SyncBuffer{}
	d1 := startDaemon(t, environ, sock1, logs)
	defer d1.kill()
	names := []string{"firework", "firework-user", "livepush", "ingest", "vsrs"}
	tokens := map[string]string{}
	for _, n := range names {
		status, h, _ := get(t, httpOver(sock1), "/v1/tokens/"+n)
		if status != 200 {
			t.Fatalf("first daemon, %s: status %d", n, status)
		}
		tokens[n] = h.AccessToken
	}
	before := p.Stats().TokenRequests
	joined := time.Now()
	d2 := startDaemon(t, environ2, sock2, logs)
	defer d2.kill()
	for _, n := range names {
		if status, h, _ := get(t, httpOver(sock2), "/v1/tokens/"+n); status != 200 || h.AccessToken != tokens[n] {
			t.Errorf("joining daemon, %s: status %d, same token %v; want 200 and the fleet's token", n, status, h.AccessToken == tokens[n])
		}
	}
	t.Logf("joining daemon: every credential served %v after its process started (binary built with -race)", time.Since(joined).Round(time.Millisecond))
	if got := p.Stats().TokenRequests; got != before {
		t.Errorf("the joining daemon made %d provider requests; want 0", got-before)
	}
}

// Two daemons with the same configuration and TOKENBROKER_REDIS_URL share
// tokens: both hand out the same valid token, one upstream refresh serves
// both, and killing one with SIGKILL costs nothing and reuses nothing.
func TestFleetOfDaemons(t *testing.T) {
	srv := redistest.Start(t)
	p, environ, sock1 := e2eSetup(t, oauthtest.Options{AccessLifetime: 3 * time.Second, Rotate: true})
	environ = append(environ, "TOKENBROKER_REDIS_URL="+srv.URL(), "TOKENBROKER_ENCRYPTION_KEY=k1:"+strings.Repeat("5a", 32),
		"TOKENBROKER_REDIS_LOCK_TTL=1s") // a lock the killed daemon held ends before the tokens do
	environ2, sock2 := peerEnviron(t, environ)
	logs := &tbtest.SyncBuffer{}
	began := time.Now()
	d1 := startDaemon(t, environ, sock1, logs)
	c1 := httpOver(sock1)
	names := []string{"firework", "firework-user", "livepush", "ingest", "vsrs"}
	for _, n := range names { // every first request done, so none is counted as the joiner's
		if status, _, _ := get(t, c1, "/v1/tokens/"+n); status != 200 {
			t.Fatalf("first daemon, %s: status %d", n, status)
		}
	}
	_, first, _ := get(t, c1, "/v1/tokens/livepush")
	d2 := startDaemon(t, environ2, sock2, logs)
	c2 := httpOver(sock2) // that it starts warm: TestJoiningDaemonStartsWarm

	deadline := time.Now().Add(8 * time.Second)
	for time.Now().Before(deadline) {
		for _, n := range names {
			for i, cl := range []*http.Client{c1, c2} {
				if status, h, _ := get(t, cl, "/v1/tokens/"+n); status != 200 || !p.Valid(h.AccessToken) {
					t.Fatalf("daemon %d, %s: status %d, valid %v", i+1, n, status, p.Valid(h.AccessToken))
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Killed between refreshes: one killed holding a rotated refresh token
	// it had not saved yet loses it, which no client can prevent
	// (TestCrashAtEveryRefreshStep covers that step).
	rc := srv.Client()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if keys, _ := rc.Keys(context.Background(), "*:lock").Result(); len(keys) == 0 || time.Now().After(deadline) {
			break
		}
	}
	d1.kill()
	deadline = time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		for _, n := range names {
			if status, h, _ := get(t, c2, "/v1/tokens/"+n); status != 200 || !p.Valid(h.AccessToken) {
				t.Fatalf("after the other daemon's kill -9, %s: status %d", n, status)
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	st := p.Stats()
	if st.ReuseEvents != 0 {
		t.Errorf("reuse events = %d; want 0", st.ReuseEvents)
	}
	// A shared cache refreshes each credential about every 2 s (a 3 s token
	// is handed out with at least 1 s left); two brokers refreshing on their
	// own would need twice that.
	cycles := time.Since(began).Seconds() / 2
	if limit := int(float64(len(names)) * (cycles + 2)); st.Issued > limit {
		t.Errorf("provider issued %d tokens in %.1f refresh cycles; a shared cache needs at most %d", st.Issued, cycles, limit)
	}
	t.Logf("provider: %d token requests, %d issued, %d refreshes, %d reuse events", st.TokenRequests, st.Issued, st.Refreshes, st.ReuseEvents)
	// Encrypted at rest: no handed-out token in Redis or in either state dir.
	_, last, _ := get(t, c2, "/v1/tokens/livepush")
	keys, _ := rc.Keys(context.Background(), "*").Result()
	var stored []string
	for _, k := range keys {
		if vals, err := rc.HGetAll(context.Background(), k).Result(); err == nil {
			stored = append(stored, fmt.Sprint(vals))
		}
	}
	for _, dir := range []string{filepath.Dir(sock1), filepath.Dir(sock2)} {
		_ = filepath.WalkDir(dir, func(p string, e os.DirEntry, err error) error {
			if err == nil && e.Type().IsRegular() {
				b, _ := os.ReadFile(p)
				stored = append(stored, string(b))
			}
			return nil
		})
	}
	if len(stored) < 3 {
		t.Fatalf("found only %d stored values to inspect", len(stored))
	}
	for _, v := range stored {
		if strings.Contains(v, last.AccessToken) || strings.Contains(v, first.AccessToken) {
			t.Errorf("a token is stored in clear: %.60s…", v)
		}
	}
	d2.kill()
}

// rediss:// with TOKENBROKER_REDIS_CA_FILE reaches a TLS-only Redis; without
// the CA the certificate is refused.
func TestRedisTLSConfig(t *testing.T) {
	srv := redistest.StartTLS(t)
	base := []string{"TOKENBROKER_CREDENTIALS=a", "TOKENBROKER_A_CLIENT_ID=id", "TOKENBROKER_A_CLIENT_SECRET=s",
		"TOKENBROKER_A_TOKEN_URL=https://auth.example.com/token", "TOKENBROKER_STATE_DIR=" + t.TempDir(),
		"TOKENBROKER_SOCKET=/tmp/tb-tls.sock", "TOKENBROKER_REDIS_URL=rediss://" + srv.Addr()}
	for _, withCA := range []bool{true, false} {
		env := base
		if withCA {
			env = append(env, "TOKENBROKER_REDIS_CA_FILE="+srv.CAFile)
		}
		cfg, err := loadConfig(env)
		if err != nil {
			t.Fatal(err)
		}
		rc := redis.NewUniversalClient(cfg.Redis)
		err = rc.Ping(context.Background()).Err()
		rc.Close()
		if withCA && err != nil {
			t.Errorf("with the CA file: %v", err)
		}
		if !withCA && err == nil {
			t.Error("without the CA file the self-signed certificate was accepted")
		}
	}
}
