// Package storetest holds what the tests of the stores and of the engine
// share: seal keys, a record as a refresh writes it, a Redis command
// counter. It imports no store implementation, so that their in-package
// tests can use it too.
package storetest

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tokenbroker/tokenbroker/broker/store"
	"github.com/tokenbroker/tokenbroker/broker/store/seal"
	"github.com/tokenbroker/tokenbroker/sources"
)

// Key returns a seal key named id whose bytes count up from b: distinct
// b, distinct material.
func Key(id string, b byte) seal.SealKey {
	k := seal.SealKey{ID: id}
	for i := range k.Key {
		k.Key[i] = b + byte(i)
	}
	return k
}

// Sealer returns a sealer of keys, the first one active.
func Sealer(t testing.TB, keys ...seal.SealKey) *seal.Sealer {
	t.Helper()
	s, err := seal.NewSealer(keys)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// BenchRecord is a record as a refresh writes it: a 300-byte JWT-sized
// access token and a rotating refresh token.
func BenchRecord(gen uint64) store.Record {
	now := time.Now()
	return store.Record{Generation: gen, UpdatedAt: now, Seed: "0123456789abcdef01234567", Token: sources.Token{
		AccessToken:  sources.NewSecret(strings.Repeat("a", 300)),
		RefreshToken: sources.NewSecret(fmt.Sprintf("rt_%040d", gen)),
		IssuedAt:     now, Expiry: now.Add(time.Hour), Scope: "openid",
	}}
}

// CountingHook counts in N the Redis commands a client sends, those of a
// pipeline one by one. A new pool connection's handshake (HELLO, AUTH,
// SELECT, CLIENT SETINFO) is not counted: when the pool dials is up to the
// machine's load, not to the protocol being measured.
type CountingHook struct{ N atomic.Int64 }

func counted(cmds ...redis.Cmder) (n int64) {
	for _, c := range cmds {
		switch c.Name() {
		case "hello", "auth", "select", "client":
		default:
			n++
		}
	}
	return n
}

func (h *CountingHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *CountingHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error { h.N.Add(counted(cmd)); return next(ctx, cmd) }
}

func (h *CountingHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error { h.N.Add(counted(cmds...)); return next(ctx, cmds) }
}
