package redis

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tokenbroker/tokenbroker/broker/redistest"
	"github.com/tokenbroker/tokenbroker/broker/store"
)

// lockEvents reports the keyspace events ("set", "del", "expired") of
// key's lock, as Redis saw them.
func lockEvents(t *testing.T, srv *redistest.Server, s *Store, key string) <-chan string {
	t.Helper()
	c := srv.Client()
	ctx := context.Background()
	if err := c.ConfigSet(ctx, "notify-keyspace-events", "K$gx").Err(); err != nil {
		t.Fatal(err)
	}
	ps := c.Subscribe(ctx, "__keyspace@0__:"+s.lockKey(key))
	if _, err := ps.Receive(ctx); err != nil { // subscribed
		t.Fatal(err)
	}
	t.Cleanup(func() { ps.Close() })
	out := make(chan string, 16)
	go func() {
		for m := range ps.Channel() {
			out <- m.Payload
		}
	}()
	return out
}

func nextEvent(t *testing.T, events <-chan string, until time.Time) string {
	t.Helper()
	for {
		select {
		case e := <-events:
			t.Logf("%s lock event %q", time.Now().Format("15:04:05.000"), e)
			if e == "expire" { // the PX of a set
				continue
			}
			return e
		case <-time.After(time.Until(until)):
			t.Fatal("no lock event before the lease of the lost attempt could have ended")
			return ""
		}
	}
}

// A lock attempt that got no answer (Redis paused past the op timeout)
// still reaches Redis once it runs again and takes the lock. The store
// releases it by its owner token, so a peer gets the lock without
// waiting out that lease.
func TestLockAttemptWithoutAnswerIsReleased(t *testing.T) {
	srv := redistest.Start(t)
	const ttl = 20 * time.Second
	a, err := New(Options{Client: srv.Client(), LockTTL: ttl, OpTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b := newRedisStore(t, srv, ttl)
	ctx := context.Background()
	// Load the lock script, so the lost attempt's EVALSHA takes the lock.
	warm, err := a.Lock(ctx, "warm")
	if err != nil {
		t.Fatal(err)
	}
	_ = warm.Release(ctx)
	events := lockEvents(t, srv, a, "k")

	start := time.Now() // the lost SET lands after this: its lease ends after start+ttl
	srv.Pause()
	_, err = a.Lock(ctx, "k")
	srv.Resume()
	if err == nil || errors.Is(err, store.ErrLockHeld) {
		t.Fatalf("Lock while Redis is paused = %v; want a timeout", err)
	}
	until := start.Add(ttl - time.Second)
	if e := nextEvent(t, events, until); e != "set" {
		t.Fatalf("first lock event %q; want the lost attempt's set", e)
	}
	if e := nextEvent(t, events, until); e != "del" {
		t.Fatalf("lock event %q after the lost attempt's set; want del (released by owner token)", e)
	}
	l, err := b.Lock(ctx, "k")
	if err != nil {
		t.Fatalf("peer's Lock after the release = %v", err)
	}
	// The reaper, still releasing the lost token, leaves the peer's lock alone.
	time.Sleep(3 * a.reapEvery())
	if held, err := l.Held(ctx); err != nil || !held {
		t.Errorf("peer's lock held %v (%v); want held", held, err)
	}
	_ = l.Release(ctx)
}

// A release that got no answer is tried again once Redis answers.
func TestReleaseWithoutAnswerIsRetried(t *testing.T) {
	srv := redistest.Start(t)
	const ttl = 20 * time.Second
	a, err := New(Options{Client: srv.Client(), LockTTL: ttl, OpTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	ctx := context.Background()
	l, err := a.Lock(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	events := lockEvents(t, srv, a, "k")
	start := time.Now()
	srv.Pause()
	rctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	err = l.Release(rctx)
	cancel()
	srv.Resume()
	if err == nil {
		t.Fatal("Release while Redis is paused succeeded")
	}
	// The lost release itself may land too: either way one del, no expiry.
	if e := nextEvent(t, events, start.Add(ttl-time.Second)); e != "del" {
		t.Fatalf("lock event %q after a release without answer; want del", e)
	}
}

// Close ends the reaper even while Redis does not answer.
func TestCloseStopsTheReaper(t *testing.T) {
	srv := redistest.Start(t)
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent(),
		goleak.IgnoreTopFunction("github.com/redis/go-redis/v9/maintnotifications.(*CircuitBreakerManager).cleanupLoop"))
	a, err := New(Options{Client: srv.Client(), LockTTL: 5 * time.Second, OpTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	srv.Pause()
	defer srv.Resume()
	if _, err := a.Lock(context.Background(), "k"); err == nil {
		t.Fatal("Lock while Redis is paused succeeded")
	}
	a.mu.Lock()
	reaping := a.reaping
	a.mu.Unlock()
	if !reaping {
		t.Fatal("no reaper for the lost attempt")
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	a.forget(a.lockKey("other"), "token") // as a lost attempt after Close
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.orphans) != 1 {
		t.Errorf("%d locks to release after Close; want the first attempt's only", len(a.orphans))
	}
}
