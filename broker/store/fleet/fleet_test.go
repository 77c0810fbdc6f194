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
