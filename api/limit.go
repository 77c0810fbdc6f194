package api

import (
	"sync"
	"time"
)

// Forced refreshes reach the provider, so callers may not ask for them
// freely: a runaway client (or a fleet of them answering every 401 with a
// refresh) must not make the broker hammer a provider. Handouts need no
// limit: they are answered from memory, and a handout without a valid
// token joins the one refresh in flight or waits out the backoff.
const (
	// RefreshCooldown is the least time between two forced refreshes of one
	// credential.
	RefreshCooldown = 10 * time.Second
	// CallerRefreshBurst forced refreshes per caller (uid) may come at
	// once, then one per CallerRefreshEvery.
	CallerRefreshBurst = 5
	CallerRefreshEvery = 6 * time.Second
)

// limiter keeps the cooldowns and the per-caller buckets.
type limiter struct {
	mu      sync.Mutex
	last    map[string]time.Time // credential -> last forced refresh let through
	buckets map[uint32]bucket    // caller uid -> token bucket
}

type bucket struct {
	tokens float64
	at     time.Time
}

// maxCallers bounds the buckets kept; past it, full buckets are dropped.
const maxCallers = 4096

// allowRefresh reports whether a forced refresh of name by uid may go ahead
// now, and otherwise how long to wait.
func (l *limiter) allowRefresh(name string, uid uint32, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.last == nil {
		l.last, l.buckets = map[string]time.Time{}, map[uint32]bucket{}
	}
	if wait := l.last[name].Add(RefreshCooldown).Sub(now); wait > 0 {
		return false, wait
	}
	b, ok := l.buckets[uid]
	if !ok {
		b = bucket{tokens: CallerRefreshBurst, at: now}
	}
	b.tokens = min(CallerRefreshBurst, b.tokens+now.Sub(b.at).Seconds()/CallerRefreshEvery.Seconds())
	b.at = now
	if b.tokens < 1 {
		l.buckets[uid] = b
		return false, time.Duration((1 - b.tokens) * float64(CallerRefreshEvery))
	}
	b.tokens--
	if len(l.buckets) >= maxCallers {
		for k, v := range l.buckets {
			if v.tokens+now.Sub(v.at).Seconds()/CallerRefreshEvery.Seconds() >= CallerRefreshBurst {
				delete(l.buckets, k)
			}
		}
	}
	l.buckets[uid] = b
	l.last[name] = now
	return true, 0
}
