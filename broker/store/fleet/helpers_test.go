package fleet

import (
	"log/slog"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker/redistest"
	"github.com/tokenbroker/tokenbroker/broker/store/redis"
)

var quiet = slog.New(slog.DiscardHandler)

func newRedisStore(t *testing.T, srv *redistest.Server, ttl time.Duration) *redis.Store {
	t.Helper()
	s, err := redis.New(redis.Options{Client: srv.Client(), LockTTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	return s
}
