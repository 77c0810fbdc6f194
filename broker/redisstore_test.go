package broker

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker/redistest"
	"github.com/tokenbroker/tokenbroker/sources"
	"github.com/tokenbroker/tokenbroker/sources/oauthtest"
)

func newRedisStore(t *testing.T, srv *redistest.Server, ttl time.Duration) *RedisStore {
	t.Helper()
	s, err := NewRedisStore(RedisOptions{Client: srv.Client(), LockTTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestRedisStoreFence(t *testing.T) {
	srv := redistest.Start(t)
	s := newRedisStore(t, srv, time.Second)
	ctx := context.Background()
	if _, err := s.Load(ctx, "k"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Load(empty) = %v; want ErrNotFound", err)
	}
	rec := Record{Generation: 5, Token: sources.Token{AccessToken: sources.NewSecret("at5"), RefreshToken: sources.NewSecret("rt5")}}
	if err := s.Save(ctx, "k", rec); err != nil {
		t.Fatal(err)
	}
	for _, gen := range []uint64{4, 5} {
		old := rec
		old.Generation, old.Token.RefreshToken = gen, sources.NewSecret("stale")
		if err := s.Save(ctx, "k", old); !errors.Is(err, ErrStale) {
			t.Errorf("Save(gen %d over 5) = %v; want ErrStale", gen, err)
		}
	}
	got, err := s.Load(ctx, "k")
	if err != nil || got.Generation != 5 || got.Token.RefreshToken.Reveal() != "rt5" {
		t.Errorf("Load = %+v, %v; want generation 5 with rt5", got, err)
	}
}

func TestRedisLockIsExclusiveAndExtended(t *testing.T) {
	srv := redistest.Start(t)
	// Extended every TTL/3, the lock survives an extension stalled by up to
	// 2/3 of the TTL: 1 s, not the 200 ms a 300 ms TTL allowed.
	const ttl = 1500 * time.Millisecond
	a, b := newRedisStore(t, srv, ttl), newRedisStore(t, srv, ttl)
	ctx := context.Background()
	lease, err := a.Lock(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second) // > 3 TTLs: only extension keeps it
	for time.Now().Before(deadline) {
		if _, err := b.Lock(ctx, "k"); !errors.Is(err, ErrLockHeld) {
			t.Fatalf("second Lock while held = %v; want ErrLockHeld", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := lease.Release(ctx); err != nil {
		t.Fatal(err)
	}
	l2, err := b.Lock(ctx, "k")
	if err != nil {
		t.Fatalf("Lock after release: %v", err)
	}
	// A holder that dies stops extending: its lock expires after the TTL.
	l2.(*redisLease).once.Do(func() { close(l2.(*redisLease).stop) })
	l2.(*redisLease).wg.Wait()
	deadline = time.Now().Add(10 * time.Second)
	for {
		if l3, err := a.Lock(ctx, "k"); err == nil {
			_ = l3.Release(ctx)
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a dead holder's lock did not expire")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestRedisWatchSurvivesRestart(t *testing.T) {
	srv := redistest.Start(t)
	a, b := newRedisStore(t, srv, time.Second), newRedisStore(t, srv, time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	keys := make(chan string, 16)
	done := make(chan struct{})
	go func() { defer close(done); _ = b.Watch(ctx, func(k string) { keys <- k }) }()
	defer func() { cancel(); <-done }()

	var resubscribed bool
	expect := func(key string, gen uint64) {
		t.Helper()
		deadline := time.After(10 * time.Second)
		for {
			// Save until the watcher's subscription is live.
			_ = a.Save(ctx, key, Record{Generation: gen})
			select {
			case k := <-keys:
				if k == "" {
					resubscribed = true // missed events: re-read everything
					continue
				}
				if k != key {
					t.Fatalf("event for %q; want %q", k, key)
				}
				return
			case <-time.After(100 * time.Millisecond):
				gen++
			case <-deadline:
				t.Fatalf("no event for %q", key)
			}
		}
	}
	expect("one", 1)
	srv.Restart()
	expect("two", 1)
	if !resubscribed {
		t.Error("no re-read signal (\"\") after the reconnection")
	}
}

// Eight brokers share one Redis and one rotating provider with reuse
// detection; clients hammer all of them. Every handout is valid, no refresh
// token is used twice, and one upstream refresh serves the whole fleet.
// TOKENBROKER_FLEET_SECONDS lengthens the run (default 12).
func TestFleetRace(t *testing.T) {
	seconds := 12
	if v, err := strconv.Atoi(os.Getenv("TOKENBROKER_FLEET_SECONDS")); err == nil && v > 0 {
		seconds = v
	}
	const brokers, creds = 8, 10
	srv := redistest.Start(t)
	p := oauthtest.StartTest(t, oauthtest.Options{AccessLifetime: 2 * time.Second, Rotate: true})
	hc := &http.Client{Timeout: 5 * time.Second}
	var names []string
	seeds := map[string]string{}
	for i := range creds {
		name := fmt.Sprintf("c%d", i)
		names = append(names, name)
		p.AddClient(oauthtest.Client{ID: name, Secret: "s", RedirectURI: "http://127.0.0.1/cb", Dialect: oauthtest.Firework})
		seeds[name] = p.IssueRefreshToken(name)
	}
	var fleet []*Broker
	for range brokers {
		var cs []Credential
		for _, name := range names {
			d, _ := sources.Preset("firework", sources.RefreshToken)
			d.TokenURL = p.TokenURL(oauthtest.Firework)
			e := &sources.Endpoint{Dialect: &d, HTTP: hc, Client: sources.Client{ID: name, Secret: sources.NewSecret("s"), RedirectURI: "http://127.0.0.1/cb"}}
			cs = append(cs, Credential{Name: name, Provider: "firework", Source: &sources.RefreshTokenSource{Endpoint: e},
				Fingerprint: "fp-" + name, InitialRefreshToken: sources.NewSecret(seeds[name])})
		}
		b, err := New(Options{Store: newRedisStore(t, srv, 2*time.Second), Logger: quiet, PeerWait: 500 * time.Millisecond}, cs)
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		fleet = append(fleet, b)
	}

	var handouts, invalid, failed atomic.Int64
	stop := time.Now().Add(time.Duration(seconds) * time.Second)
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			for n := i; time.Now().Before(stop); n++ {
				b, name := fleet[n%brokers], names[n%creds]
				h, err := b.Token(context.Background(), name)
				handouts.Add(1)
				switch {
				case err != nil:
					failed.Add(1)
					t.Logf("handout %s: %v", name, err)
				case !p.Valid(h.AccessToken.Reveal()):
					invalid.Add(1)
				}
			}
		})
	}
	wg.Wait()

	var cycles uint64
	for _, name := range names {
		rec, err := fleet[0].opts.Store.Load(context.Background(), fleet[0].creds[name].key)
		if err != nil {
			t.Fatal(err)
		}
		cycles += rec.Generation
	}
	st := p.Stats()
	ratio := float64(st.Refreshes) / float64(cycles)
	t.Logf("%d s, %d brokers, %d credentials: %d handouts (%d failed, %d invalid), %d upstream refreshes for %d generations (%.3f per cycle), %d reuse events",
		seconds, brokers, creds, handouts.Load(), failed.Load(), invalid.Load(), st.Refreshes, cycles, ratio, st.ReuseEvents)
	if st.ReuseEvents != 0 {
		t.Errorf("reuse events = %d; want 0", st.ReuseEvents)
	}
	if failed.Load() != 0 || invalid.Load() != 0 {
		t.Errorf("%d failed and %d invalid handouts of %d; want 0", failed.Load(), invalid.Load(), handouts.Load())
	}
	if ratio > 1.02 {
		t.Errorf("upstream refreshes per cycle = %.3f; want <= 1.02", ratio)
	}
	if min := uint64(creds * seconds / 2); cycles < min {
		t.Errorf("only %d refresh cycles in %d s of 2 s tokens; want >= %d", cycles, seconds, min)
	}
}
