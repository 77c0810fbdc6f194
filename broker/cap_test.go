package broker

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/tokenbroker/tokenbroker/sources"
)

// gateSource answers client_credentials after a delay and counts the
// requests in flight at once.
type gateSource struct {
	delay         time.Duration
	inflight, max *atomic.Int32
	calls         *atomic.Int32
}

func (s gateSource) Grant() sources.Grant { return sources.ClientCredentials }

func (s gateSource) Spends(sources.Token) bool { return false }

func (s gateSource) Token(ctx context.Context, _ sources.Token) (sources.Token, error) {
	s.calls.Add(1)
	n := s.inflight.Add(1)
	defer s.inflight.Add(-1)
	for {
		m := s.max.Load()
		if n <= m || s.max.CompareAndSwap(m, n) {
			break
		}
	}
	select {
	case <-time.After(s.delay):
	case <-ctx.Done():
		return sources.Token{}, ctx.Err()
	}
	now := time.Now()
	return sources.Token{AccessToken: sources.NewSecret("at"), IssuedAt: now, Expiry: now.Add(time.Hour)}, nil
}

// A slow provider gets at most ProviderConcurrency refreshes at once, even
// when 20 of its credentials start together (a fleet restart), and it does
// not hold up another provider's credentials.
func TestPerProviderConcurrencyCap(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var slowIn, slowMax, slowCalls, fastIn, fastMax, fastCalls atomic.Int32
		var creds []Credential
		for i := range 20 {
			creds = append(creds, Credential{Name: fmt.Sprintf("slow%d", i), Provider: "slow", Fingerprint: fmt.Sprint("s", i),
				Source: gateSource{delay: 10 * time.Second, inflight: &slowIn, max: &slowMax, calls: &slowCalls}})
		}
		for i := range 3 {
			creds = append(creds, Credential{Name: fmt.Sprintf("fast%d", i), Provider: "fast", Fingerprint: fmt.Sprint("f", i),
				Source: gateSource{delay: 100 * time.Millisecond, inflight: &fastIn, max: &fastMax, calls: &fastCalls}})
		}
		b, err := New(Options{Store: openStore(t, t.TempDir()), Logger: quiet, ProviderConcurrency: 3}, creds)
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		time.Sleep(time.Second) // the fast provider's refreshes are done; the slow one's first batch runs
		synctest.Wait()
		// The 17 waiting refreshes wait in a queue, not as parked goroutines.
		buf := make([]byte, 1<<20)
		if n := strings.Count(string(buf[:runtime.Stack(buf, true)]), "(*Broker).runRefresh("); n != 3 {
			t.Errorf("%d goroutines run or wait in runRefresh; want 3, the cap", n)
		}
		for i := range 3 {
			mustToken(t, b, fmt.Sprintf("fast%d", i))
		}
		time.Sleep(80 * time.Second) // 20 slow refreshes, 3 at a time, 10 s each
		synctest.Wait()
		if got := slowMax.Load(); got != 3 {
			t.Errorf("the slow provider saw %d refreshes at once; want the cap, 3", got)
		}
		if got := slowCalls.Load(); got != 20 {
			t.Errorf("slow provider calls: %d; want 20, one per credential", got)
		}
		for i := range 20 {
			mustToken(t, b, fmt.Sprintf("slow%d", i))
		}
	})
}
