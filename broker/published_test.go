package broker

import (
	"context"
	"github.com/tokenbroker/tokenbroker/broker/store/file"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// publishLog records Options.Published calls.
type publishLog struct {
	mu    sync.Mutex
	calls []publishCall
}

type publishCall struct {
	name  string
	h     Handout
	until time.Time
}

func (l *publishLog) record(name string, h Handout, until time.Time) {
	l.mu.Lock()
	l.calls = append(l.calls, publishCall{name, h, until})
	l.mu.Unlock()
}

func (l *publishLog) last() (publishCall, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.calls) == 0 {
		return publishCall{}, 0
	}
	return l.calls[len(l.calls)-1], len(l.calls)
}

// Published hears of every token handouts give out, as they start giving
// it out, with the handout floor as until; and of the stored token at Start.
func TestPublishedFollowsHandouts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir := t.TempDir()
		p := newFakeProvider(10*time.Minute, true, "rt-0")
		log := &publishLog{}
		var store *file.Store
		newBroker := func() *Broker {
			store = openStore(t, dir)
			b, err := New(Options{Store: store, Logger: quiet, Published: log.record}, []Credential{refreshCred("fw", p, "rt-0")})
			if err != nil {
				t.Fatal(err)
			}
			if err := b.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
			return b
		}
		b := newBroker()
		for i := range 3 {
			if i > 0 {
				if err := b.Refresh(context.Background(), "fw"); err != nil {
					t.Fatal(err)
				}
			}
			h := mustToken(t, b, "fw")
			c, n := log.last()
			if n != i+1 || c.name != "fw" || !c.h.AccessToken.Equal(h.AccessToken) || !c.h.Expiry.Equal(h.Expiry) {
				t.Fatalf("after %d refreshes: %d calls, last %q; want %d, the token handed out", i, n, c.name, i+1)
			}
			// 10-minute tokens: the floor is 60 s before expiry.
			if want := h.Expiry.Add(-time.Minute); !c.until.Equal(want) {
				t.Errorf("until %v; want %v, a minute before expiry", c.until, want)
			}
		}
		b.Close()
		store.Close()
		before, _ := log.last()
		b = newBroker()
		defer store.Close()
		defer b.Close()
		if c, n := log.last(); n != 4 || !c.h.AccessToken.Equal(before.h.AccessToken) {
			t.Errorf("after a restart: %d calls; want a 4th with the stored token", n)
		}
	})
}
