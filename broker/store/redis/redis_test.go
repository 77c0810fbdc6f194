package redis

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker/redistest"
	"github.com/tokenbroker/tokenbroker/broker/store"
	"github.com/tokenbroker/tokenbroker/sources"
)

func TestRedisStoreFence(t *testing.T) {
	srv := redistest.Start(t)
	s := newRedisStore(t, srv, time.Second)
	ctx := context.Background()
	if _, err := s.Load(ctx, "k"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Load(empty) = %v; want ErrNotFound", err)
	}
	rec := store.Record{Generation: 5, Token: sources.Token{AccessToken: sources.NewSecret("at5"), RefreshToken: sources.NewSecret("rt5")}}
	if err := s.Save(ctx, "k", rec); err != nil {
		t.Fatal(err)
	}
	for _, gen := range []uint64{4, 5} {
		old := rec
		old.Generation, old.Token.RefreshToken = gen, sources.NewSecret("stale")
		if err := s.Save(ctx, "k", old); !errors.Is(err, store.ErrStale) {
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
	held, err := a.Lock(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second) // > 3 TTLs: only extension keeps it
	for time.Now().Before(deadline) {
		if _, err := b.Lock(ctx, "k"); !errors.Is(err, store.ErrLockHeld) {
			t.Fatalf("second Lock while held = %v; want ErrLockHeld", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := held.Release(ctx); err != nil {
		t.Fatal(err)
	}
	l2, err := b.Lock(ctx, "k")
	if err != nil {
		t.Fatalf("Lock after release: %v", err)
	}
	// A holder that dies stops extending: its lock expires after the TTL.
	l2.(*lease).once.Do(func() { close(l2.(*lease).stop) })
	l2.(*lease).wg.Wait()
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
			_ = a.Save(ctx, key, store.Record{Generation: gen})
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

// A lease held for a slow provider outlives an extension that fails
// (Redis paused past one tick): the next tick extends it again.
func TestLeaseOutlivesAFailedExtension(t *testing.T) {
	rs := redistest.Start(t)
	const ttl = 3 * time.Second // extended every second
	store, _ := New(Options{Client: rs.Client(), LockTTL: ttl, OpTimeout: 100 * time.Millisecond})
	lease, err := store.Lock(context.Background(), "k")
	if err != nil {
		t.Fatal(err)
	}
	defer lease.Release(context.Background())
	rs.Pause() // past the first tick: that extension fails
	time.Sleep(1500 * time.Millisecond)
	rs.Resume()
	time.Sleep(ttl) // past the lease the last good extension gave
	held, err := lease.Held(context.Background())
	if err != nil || !held {
		t.Errorf("held %v (%v) after a failed extension; want the lease extended again", held, err)
	}
}
