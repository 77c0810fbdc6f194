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
	"github.com/tokenbroker/tokenbroker/sources/oauthtest"
)

// Two daemons with the same configuration and TOKENBROKER_REDIS_URL share
// tokens: both hand out the same valid token, one upstream refresh serves
// both, and killing one with SIGKILL costs nothing and reuses nothing.
func TestFleetOfDaemons(t *testing.T) {
	srv := redistest.Start(t)
	p, environ, sock1 := e2eSetup(t, oauthtest.Options{AccessLifetime: 3 * time.Second, Rotate: true})
	environ = append(environ, "TOKENBROKER_REDIS_URL="+srv.URL(), "TOKENBROKER_ENCRYPTION_KEY=k1:"+strings.Repeat("5a", 32))
	dir2, err := os.MkdirTemp("", "tb-e2e2")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir2) })
	sock2 := filepath.Join(dir2, "tokenbroker.sock")
	var environ2 []string
	for _, kv := range environ {
		switch {
		case strings.HasPrefix(kv, "TOKENBROKER_SOCKET="):
			kv = "TOKENBROKER_SOCKET=" + sock2
		case strings.HasPrefix(kv, "TOKENBROKER_STATE_DIR="):
			kv = "TOKENBROKER_STATE_DIR=" + filepath.Join(dir2, "state")
		}
		environ2 = append(environ2, kv)
	}
	logs := &syncBuffer{}
	d1 := startDaemon(t, environ, sock1, logs)
	c1 := httpOver(sock1)
	names := []string{"firework", "firework-user", "livepush", "ingest", "vsrs"}
	for _, n := range names { // every first request done, so none is counted as the joiner's
		if status, _, _ := get(t, c1, "/v1/tokens/"+n); status != 200 {
			t.Fatalf("first daemon, %s: status %d", n, status)
		}
	}
	_, first, _ := get(t, c1, "/v1/tokens/livepush")
	before := p.Stats().TokenRequests
	joined := time.Now()
	d2 := startDaemon(t, environ2, sock2, logs)
	c2 := httpOver(sock2)
	if status, h, _ := get(t, c2, "/v1/tokens/livepush"); status != 200 || h.AccessToken != first.AccessToken {
		t.Errorf("joining daemon: status %d, same token %v; want 200 and the fleet's token", status, h.AccessToken == first.AccessToken)
	}
	t.Logf("joining daemon: first handout %v after its process started (binary built with -race)", time.Since(joined).Round(time.Millisecond))
	if got := p.Stats().TokenRequests; got != before {
		t.Errorf("the joining daemon made %d provider requests; want 0", got-before)
	}

	began := time.Now()
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
	// A shared cache refreshes each credential once per 75-85% of a 3 s
	// lifetime; two brokers refreshing on their own would need twice that.
	cycles := time.Since(began).Seconds() / (0.75 * 3)
	if limit := int(float64(len(names)) * (cycles + 2)); st.Issued > limit {
		t.Errorf("provider issued %d tokens in %.1f refresh cycles; a shared cache needs at most %d", st.Issued, cycles, limit)
	}
	t.Logf("provider: %d token requests, %d issued, %d refreshes, %d reuse events", st.TokenRequests, st.Issued, st.Refreshes, st.ReuseEvents)
	// Encrypted at rest: no handed-out token in Redis or in either state dir.
	_, last, _ := get(t, c2, "/v1/tokens/livepush")
	rc := srv.Client()
	keys, _ := rc.Keys(context.Background(), "*").Result()
	var stored []string
	for _, k := range keys {
		if vals, err := rc.HGetAll(context.Background(), k).Result(); err == nil {
			stored = append(stored, fmt.Sprint(vals))
		}
	}
	for _, dir := range []string{filepath.Dir(sock1), dir2} {
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
