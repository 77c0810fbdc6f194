package redis

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/tokenbroker/tokenbroker/broker/redistest"
	"github.com/tokenbroker/tokenbroker/broker/store"
	"github.com/tokenbroker/tokenbroker/sources"
)

func universalStore(t *testing.T, o *goredis.UniversalOptions) *Store {
	t.Helper()
	c := goredis.NewUniversalClient(o)
	t.Cleanup(func() { c.Close() })
	s, err := New(Options{Client: c, LockTTL: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Through a three-master Cluster: the fenced save script, the lock and the
// events work for keys spread over the slots (each credential's keys share
// one slot thanks to the hash tag).
func TestRedisCluster(t *testing.T) {
	cl := redistest.StartCluster(t)
	a := universalStore(t, &goredis.UniversalOptions{Addrs: cl.Addrs()})
	b := universalStore(t, &goredis.UniversalOptions{Addrs: cl.Addrs()})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events := make(chan string, 100)
	watching := make(chan struct{})
	go func() { defer close(watching); _ = b.Watch(ctx, func(k string) { events <- k }) }()
	defer func() { cancel(); <-watching }()

	for i := range 12 {
		key := fmt.Sprintf("cred%d.fp", i)
		lease, err := a.Lock(ctx, key)
		if err != nil {
			t.Fatalf("%s: lock: %v", key, err)
		}
		if _, err := b.Lock(ctx, key); !errors.Is(err, store.ErrLockHeld) {
			t.Errorf("%s: second lock = %v; want ErrLockHeld", key, err)
		}
		if err := a.Save(ctx, key, store.Record{Generation: 2, Token: sources.Token{RefreshToken: sources.NewSecret("rt")}}); err != nil {
			t.Fatalf("%s: save: %v", key, err)
		}
		if err := b.Save(ctx, key, store.Record{Generation: 1}); !errors.Is(err, store.ErrStale) {
			t.Errorf("%s: stale save = %v; want ErrStale", key, err)
		}
		if r, err := b.Load(ctx, key); err != nil || r.Token.RefreshToken.Reveal() != "rt" {
			t.Errorf("%s: load = %v", key, err)
		}
		_ = lease.Release(ctx)
	}
	deadline := time.After(10 * time.Second)
	for seen := 0; seen < 1; {
		select {
		case <-events:
			seen++
		case <-deadline:
			t.Fatal("no event through the cluster")
		case <-time.After(200 * time.Millisecond):
			_ = a.Save(ctx, "late.fp", store.Record{Generation: uint64(time.Now().UnixNano())})
		}
	}
}

// Through Sentinel: after the master is killed, the sentinels promote the
// replica and the store works again; the time this takes is logged.
func TestRedisSentinelFailover(t *testing.T) {
	st := redistest.StartSentinel(t)
	s := universalStore(t, &goredis.UniversalOptions{MasterName: st.Name, Addrs: st.Addrs(), MaxRetries: -1})
	ctx := context.Background()
	if err := s.Save(ctx, "k.fp", store.Record{Generation: 1, Token: sources.Token{RefreshToken: sources.NewSecret("rt1")}}); err != nil {
		t.Fatal(err)
	}
	// Let the replica catch up, then lose the master.
	time.Sleep(200 * time.Millisecond)
	st.Master.Kill()
	killed := time.Now()
	deadline := killed.Add(30 * time.Second)
	for {
		err := s.Save(ctx, "k.fp", store.Record{Generation: 2, Token: sources.Token{RefreshToken: sources.NewSecret("rt2")}})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no write 30s after the master died: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("writes resumed %v after the master was killed", time.Since(killed).Round(100*time.Millisecond))
	if r, err := s.Load(ctx, "k.fp"); err != nil || r.Generation != 2 {
		t.Errorf("after failover: %+v, %v", r.Generation, err)
	}
}
