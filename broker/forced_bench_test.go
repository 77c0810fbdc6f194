package broker

import (
	"context"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker/redistest"
	"github.com/tokenbroker/tokenbroker/broker/store"
	"github.com/tokenbroker/tokenbroker/broker/store/file"
	redisstore "github.com/tokenbroker/tokenbroker/broker/store/redis"
	"github.com/tokenbroker/tokenbroker/broker/store/storetest"
)

// BenchmarkForcedRefresh measures one whole forced refresh through the
// engine (Broker.Refresh: the goroutine, the provider cap, lock, re-read,
// source, save, publish) with an in-memory source, over each store.
func BenchmarkForcedRefresh(b *testing.B) {
	for _, name := range []string{"filestore", "redis"} {
		b.Run(name, func(b *testing.B) {
			var st store.Store
			var hook *storetest.CountingHook
			switch name {
			case "filestore":
				fs, err := file.Open(b.TempDir())
				if err != nil {
					b.Fatal(err)
				}
				st = fs
			case "redis":
				c := redistest.Start(b).Client()
				hook = &storetest.CountingHook{}
				c.AddHook(hook)
				rs, err := redisstore.New(redisstore.Options{Client: c})
				if err != nil {
					b.Fatal(err)
				}
				st = rs
			}
			defer st.Close()
			br := benchBroker(b, st)
			defer br.Close()
			ctx := context.Background()
			time.Sleep(100 * time.Millisecond) // the first save's event
			if hook != nil {
				hook.N.Store(0)
			}
			b.ReportAllocs()
			for b.Loop() {
				if err := br.Refresh(ctx, "cc"); err != nil {
					b.Fatal(err)
				}
			}
			if hook != nil {
				// The event's re-read arrives asynchronously; it is counted
				// when it lands within the run.
				b.ReportMetric(float64(hook.N.Load())/float64(b.N), "cmds/op")
			}
		})
	}
}
