package redis

import (
	"context"
	"fmt"
	"testing"

	"github.com/tokenbroker/tokenbroker/broker/redistest"
	"github.com/tokenbroker/tokenbroker/broker/store/seal"
	"github.com/tokenbroker/tokenbroker/broker/store/storetest"
)

// BenchmarkRedisRefreshPath measures the store side of one refresh against a
// real redis-server on loopback: Lock, Load, Save (the fenced Lua script,
// which also publishes) and Release, as Broker.refresh calls them. The
// provider request is left out. cmds/op counts the Redis commands sent.
func BenchmarkRedisRefreshPath(b *testing.B) {
	srv := redistest.Start(b)
	for _, tc := range []struct {
		name   string
		sealer *seal.Sealer
	}{{"plain", nil}, {"sealed", storetest.Sealer(b, storetest.Key("a", 1))}} {
		b.Run(tc.name, func(b *testing.B) {
			c := srv.Client()
			hook := &storetest.CountingHook{}
			c.AddHook(hook)
			s, err := New(Options{Client: c, Sealer: tc.sealer, Prefix: "bench-" + tc.name + ":"})
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			// A key of its own: the framework calls this function once per
			// b.N it tries.
			key := fmt.Sprintf("cred.%016x", benchKeys.Add(1))
			if err := s.Save(ctx, key, storetest.BenchRecord(1)); err != nil {
				b.Fatal(err)
			}
			hook.N.Store(0)
			b.ReportAllocs()
			for b.Loop() {
				lease, err := s.Lock(ctx, key)
				if err != nil {
					b.Fatal(err)
				}
				rec, err := s.Load(ctx, key)
				if err != nil {
					b.Fatal(err)
				}
				if err := s.Save(ctx, key, storetest.BenchRecord(rec.Generation+1)); err != nil {
					b.Fatal(err)
				}
				if err := lease.Release(ctx); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(hook.N.Load())/float64(b.N), "cmds/op")
		})
	}
}
