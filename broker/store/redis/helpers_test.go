package redis

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker/redistest"
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

var benchKeys atomic.Uint64
