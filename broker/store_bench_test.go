package broker

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker/redistest"
	"github.com/tokenbroker/tokenbroker/sources"
)

// benchRecord is a record as a refresh writes it: a 300-byte JWT-sized
// access token and a rotating refresh token.
func benchRecord(gen uint64) Record {
	now := time.Now()
	return Record{Generation: gen, UpdatedAt: now, Seed: "0123456789abcdef01234567", Token: sources.Token{
		AccessToken:  sources.NewSecret(strings.Repeat("a", 300)),
		RefreshToken: sources.NewSecret(fmt.Sprintf("rt_%040d", gen)),
		IssuedAt:     now, Expiry: now.Add(time.Hour), Scope: "openid",
	}}
}

var benchKeys atomic.Uint64

// BenchmarkRedisRefreshPath measures the store side of one refresh against a
// real redis-server on loopback: Lock, Load, Save (the fenced Lua script,
// which also publishes) and Release, as Broker.refresh calls them. The
// provider request is left out. cmds/op counts the Redis commands sent.
func BenchmarkRedisRefreshPath(b *testing.B) {
	srv := redistest.Start(b)
	for _, tc := range []struct {
		name   string
		sealer *Sealer
	}{{"plain", nil}, {"sealed", sealer(b, testKey("a", 1))}} {
		b.Run(tc.name, func(b *testing.B) {
			c := srv.Client()
			hook := &countingHook{}
			c.AddHook(hook)
			s, err := NewRedisStore(RedisOptions{Client: c, Sealer: tc.sealer, Prefix: "bench-" + tc.name + ":"})
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			// A key of its own: the framework calls this function once per
			// b.N it tries.
			key := fmt.Sprintf("cred.%016x", benchKeys.Add(1))
			if err := s.Save(ctx, key, benchRecord(1)); err != nil {
				b.Fatal(err)
			}
			hook.n.Store(0)
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
				if err := s.Save(ctx, key, benchRecord(rec.Generation+1)); err != nil {
					b.Fatal(err)
				}
				if err := lease.Release(ctx); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(hook.n.Load())/float64(b.N), "cmds/op")
		})
	}
}

// BenchmarkFileStoreSave measures the embedded store's durable write: read
// the stored generation, write a temporary file, fsync, rename, fsync the
// directory. It bounds how fast one broker can refresh with a FileStore,
// since saves are serialised.
func BenchmarkFileStoreSave(b *testing.B) {
	s, err := OpenFileStore(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	var gen uint64
	b.ReportAllocs()
	for b.Loop() {
		gen++
		if err := s.Save(ctx, "cred.0123456789abcdef", benchRecord(gen)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkForcedRefresh measures one whole forced refresh through the
// engine (Broker.Refresh: the goroutine, the provider cap, lock, re-read,
// source, save, publish) with an in-memory source, over each store.
func BenchmarkForcedRefresh(b *testing.B) {
	for _, name := range []string{"filestore", "redis"} {
		b.Run(name, func(b *testing.B) {
			var store Store
			var hook *countingHook
			switch name {
			case "filestore":
				fs, err := OpenFileStore(b.TempDir())
				if err != nil {
					b.Fatal(err)
				}
				store = fs
			case "redis":
				c := redistest.Start(b).Client()
				hook = &countingHook{}
				c.AddHook(hook)
				rs, err := NewRedisStore(RedisOptions{Client: c})
				if err != nil {
					b.Fatal(err)
				}
				store = rs
			}
			defer store.Close()
			p := newFakeProvider(time.Hour, false)
			br, err := New(Options{Store: store, Logger: quiet}, []Credential{{Name: "cc", Provider: "fake",
				Source: fakeSource{p, sources.ClientCredentials}, Fingerprint: "cc"}})
			if err != nil {
				b.Fatal(err)
			}
			if err := br.Start(context.Background()); err != nil {
				b.Fatal(err)
			}
			defer br.Close()
			ctx := context.Background()
			if _, err := br.Token(ctx, "cc"); err != nil {
				b.Fatal(err)
			}
			time.Sleep(100 * time.Millisecond) // the first save's event
			if hook != nil {
				hook.n.Store(0)
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
				b.ReportMetric(float64(hook.n.Load())/float64(b.N), "cmds/op")
			}
		})
	}
}
