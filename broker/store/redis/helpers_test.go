package redis

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/tokenbroker/tokenbroker/broker/redistest"
	"github.com/tokenbroker/tokenbroker/broker/store"
	"github.com/tokenbroker/tokenbroker/broker/store/seal"
	"github.com/tokenbroker/tokenbroker/sources"
)

func newRedisStore(t *testing.T, srv *redistest.Server, ttl time.Duration) *Store {
	t.Helper()
	s, err := New(Options{Client: srv.Client(), LockTTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// countingHook counts the Redis commands a client sends.
type countingHook struct{ n atomic.Int64 }

func (h *countingHook) DialHook(next goredis.DialHook) goredis.DialHook { return next }
func (h *countingHook) ProcessHook(next goredis.ProcessHook) goredis.ProcessHook {
	return func(ctx context.Context, cmd goredis.Cmder) error { h.n.Add(1); return next(ctx, cmd) }
}
func (h *countingHook) ProcessPipelineHook(next goredis.ProcessPipelineHook) goredis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []goredis.Cmder) error {
		h.n.Add(int64(len(cmds)))
		return next(ctx, cmds)
	}
}

// benchRecord is a record as a refresh writes it: a 300-byte JWT-sized
// access token and a rotating refresh token.
func benchRecord(gen uint64) store.Record {
	now := time.Now()
	return store.Record{Generation: gen, UpdatedAt: now, Seed: "0123456789abcdef01234567", Token: sources.Token{
		AccessToken:  sources.NewSecret(strings.Repeat("a", 300)),
		RefreshToken: sources.NewSecret(fmt.Sprintf("rt_%040d", gen)),
		IssuedAt:     now, Expiry: now.Add(time.Hour), Scope: "openid",
	}}
}

func testKey(id string, b byte) seal.SealKey {
	k := seal.SealKey{ID: id}
	for i := range k.Key {
		k.Key[i] = b + byte(i)
	}
	return k
}

func sealer(t testing.TB, keys ...seal.SealKey) *seal.Sealer {
	t.Helper()
	s, err := seal.NewSealer(keys)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

var benchKeys atomic.Uint64
