package fleet

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker/redistest"
	"github.com/tokenbroker/tokenbroker/broker/store"
	"github.com/tokenbroker/tokenbroker/broker/store/file"
	"github.com/tokenbroker/tokenbroker/sources"
)

// The offer loop alone: a record saved while Redis was down reaches Redis
// once it is back, with no read or resubscription to carry it there.
func TestRecordSavedWhileRedisWasDownIsOfferedAgain(t *testing.T) {
	srv := redistest.Start(t)
	local, err := file.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	shared := newRedisStore(t, srv, 2*time.Second)
	fs := New(local, shared, Options{Logger: quiet})
	defer fs.Close()
	ctx := context.Background()

	now := time.Now()
	rec := func(gen uint64) store.Record {
		return store.Record{Generation: gen, UpdatedAt: now, Token: sources.Token{AccessToken: sources.NewSecret(fmt.Sprint("at", gen)), IssuedAt: now, Expiry: now.Add(time.Hour)}}
	}
	if err := fs.save(ctx, "k", rec(1)); err != nil {
		t.Fatal(err)
	}
	srv.Kill()
	if err := fs.save(ctx, "k", rec(2)); err != nil {
		t.Fatalf("save while Redis is down: %v; want it kept locally", err)
	}
	srv.Restart()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if got, err := shared.Load(ctx, "k"); err == nil && got.Generation == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the record saved while Redis was down never reached Redis")
		}
	}
}

// A read writes nothing: after Redis lost a record, Load returns the local
// copy and leaves Redis empty (it used to put the record back, and every
// peer's read of that write could write again). The repair on
// reconnection, or under a claim's lock, puts it back.
func TestLoadWritesNothing(t *testing.T) {
	srv := redistest.Start(t)
	local, err := file.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	fs := New(local, newRedisStore(t, srv, 2*time.Second), Options{Logger: quiet})
	defer fs.Close()
	ctx := context.Background()
	now := time.Now()
	rec := store.Record{Generation: 3, UpdatedAt: now, Token: sources.Token{AccessToken: sources.NewSecret("at3"), IssuedAt: now, Expiry: now.Add(time.Hour)}}
	if err := fs.save(ctx, "k", rec); err != nil {
		t.Fatal(err)
	}
	if _, err := fs.Load(ctx, "k"); err != nil { // known from now on
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // the loop's first repair of k: nothing to do
	srv.Flush()
	rc := srv.Client()
	recKey := "tokenbroker:{k}:rec"
	for range 5 {
		got, err := fs.Load(ctx, "k")
		if err != nil || got.Generation != 3 {
			t.Fatalf("Load after Redis lost the record = %+v, %v; want the local generation 3", got, err)
		}
		time.Sleep(100 * time.Millisecond) // a loop tick
		if n, _ := rc.Exists(ctx, recKey).Result(); n != 0 {
			t.Fatal("a read put the record back into Redis; want reads without side effects")
		}
	}
	c, err := fs.Acquire(ctx, "k", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Release(ctx)
	if got, err := c.Current(); err != nil || got.Generation != 3 {
		t.Errorf("claim's record = %+v, %v; want generation 3", got, err)
	}
	if n, _ := rc.Exists(ctx, recKey).Result(); n != 1 {
		t.Error("a claim did not repair Redis from the local copy")
	}
}
