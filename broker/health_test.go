package broker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/tokenbroker/tokenbroker/sources"
)

// heal makes p answer normally again.
func (p *fakeProvider) heal() {
	p.mu.Lock()
	p.fail = nil
	p.mu.Unlock()
}

// failFor queues n copies of err.
func (p *fakeProvider) failFor(n int, err error) {
	errs := make([]error, n)
	for i := range errs {
		errs[i] = err
	}
	p.failNext(errs...)
}

func (p *fakeProvider) callTimes() []time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]time.Time(nil), p.at...)
}

func ccCred(name string, p *fakeProvider) Credential {
	return Credential{Name: name, Provider: "fake", Source: fakeSource{p, sources.ClientCredentials}, Fingerprint: name}
}

// No rule of the broker's own makes a request sooner than the provider's
// Retry-After: not the last-margin rule, not handouts, not a forced
// refresh. A 20 s token's last margin starts at 16 s, so before the fix
// the first two cases were retried 2 s and 8 s later.
func TestRetryAfterIsAFloor(t *testing.T) {
	for _, tc := range []struct {
		name    string
		forceAt time.Duration // into a 20 s lifetime
		err     error
		want    time.Duration // the least gap before the next request
	}{
		{"429 Retry-After 3s in the last margin", 14 * time.Second,
			&sources.ProviderError{Status: 429, RetryAfter: 3 * time.Second}, 3 * time.Second},
		{"forced refresh at 40% answered 429 Retry-After 10s", 8 * time.Second,
			&sources.ProviderError{Status: 429, RetryAfter: 10 * time.Second}, 10 * time.Second},
		{"a credential's own transient error: Retry-After beats the last margin", 8 * time.Second,
			&sources.ProviderError{Status: 400, Code: "slow_down", RetryAfter: 30 * time.Second}, 30 * time.Second},
		{"an absurd Retry-After is capped at an hour", 8 * time.Second,
			&sources.ProviderError{Status: 503, RetryAfter: 24 * time.Hour}, time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				p := newFakeProvider(20*time.Second, false)
				b := start(t, openStore(t, t.TempDir()), ccCred("cc", p))
				defer b.Close()
				mustToken(t, b, "cc")
				time.Sleep(tc.forceAt)
				p.failNext(tc.err)
				if err := b.Refresh(context.Background(), "cc"); err == nil {
					t.Fatal("forced refresh answered with an error reported success")
				}
				failedAt := time.Now()
				// Callers keep asking and an operator forces a refresh:
				// neither may send a request before the floor.
				step := max(250*time.Millisecond, tc.want/100)
				forced := false
				for calls, _ := p.stats(); calls < 3 && time.Since(failedAt) < 25*time.Hour; calls, _ = p.stats() {
					b.Token(context.Background(), "cc")
					if !forced && time.Since(failedAt) >= tc.want/2 {
						forced = true
						err := b.Refresh(context.Background(), "cc")
						if err == nil || !strings.Contains(err.Error(), "Retry-After") && !strings.Contains(err.Error(), "probe") {
							t.Errorf("forced refresh during Retry-After: %v; want a refusal saying until when", err)
						}
					}
					time.Sleep(step)
				}
				at := p.callTimes()
				if len(at) < 3 {
					t.Fatalf("no request within 25 h of the failure; want one after %v", tc.want)
				}
				gap := at[2].Sub(at[1])
				if gap < tc.want {
					t.Errorf("next request %v after Retry-After; want no sooner than %v", gap, tc.want)
				}
				if slack := 5 * time.Second; gap > tc.want+slack {
					t.Errorf("next request %v after Retry-After; want within %v of %v", gap, slack, tc.want)
				}
			})
		})
	}
}

// While an endpoint fails, exactly one request per probe interval (or per
// Retry-After, when longer) goes to it for 100 credentials, the rest wait,
// handouts say when the next probe is, and the moment a probe succeeds every
// credential refreshes. Before the fix each credential retried on its own.
func TestProbeCadence(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		gap  time.Duration
	}{
		{"503", &sources.ProviderError{Status: 503}, 5 * time.Second},
		{"connection refused", errors.New("dial tcp 127.0.0.1:1: connect: connection refused"), 5 * time.Second},
		{"429 Retry-After 12s", &sources.ProviderError{Status: 429, RetryAfter: 12 * time.Second}, 12 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				const n, life, outage = 100, 10 * time.Minute, 30 * time.Minute
				p := newFakeProvider(life, false)
				creds := make([]Credential, n)
				for i := range creds {
					creds[i] = ccCred(fmt.Sprintf("cc%03d", i), p)
				}
				b := start(t, openStore(t, t.TempDir()), creds...)
				defer b.Close()
				for _, c := range creds {
					mustToken(t, b, c.Name)
				}
				before, _ := p.stats()
				p.failFor(1_000_000, tc.err)
				time.Sleep(outage) // three lifetimes: every token expires
				synctest.Wait()

				at := p.callTimes()[before:]
				for i := 1; i < len(at); i++ {
					if gap := at[i].Sub(at[i-1]); gap < tc.gap {
						t.Fatalf("requests %d and %d to the failing endpoint came %v apart; want one per %v", i, i+1, gap, tc.gap)
					}
				}
				// The probes go on: one per interval from the first failure.
				if want := int(at[len(at)-1].Sub(at[0]) / tc.gap); len(at) < want {
					t.Errorf("%d requests during the outage; want a probe every %v (%d)", len(at), tc.gap, want)
				}
				span := time.Since(at[0])
				t.Logf("%d credentials: %d requests to the failing endpoint over %v from its first failure (%.1f a minute)",
					n, len(at), span.Round(time.Second), float64(len(at))/span.Minutes())

				_, err := b.Token(context.Background(), "cc042")
				var ue *UnavailableError
				if !errors.As(err, &ue) || !strings.Contains(ue.Advice(), "probe") || ue.RetryAt.IsZero() {
					t.Fatalf("handout during the outage: %v; want an outage naming the next probe", err)
				}
				if s := b.creds["cc042"].status(); s.State != StateRetrying || !s.NextRefresh.Equal(ue.RetryAt) {
					t.Errorf("status during the outage: %+v; want retrying until the next probe at %v", s, ue.RetryAt)
				}

				p.heal()
				healed := time.Now()
				callsBefore, _ := p.stats()
				time.Sleep(tc.gap)
				synctest.Wait()
				for _, c := range creds {
					if _, ok := b.creds[c.Name].handout(time.Now()); !ok {
						t.Fatalf("%s has no token %v after the provider recovered; want every credential refreshed at the first probe", c.Name, tc.gap)
					}
				}
				if calls, _ := p.stats(); calls-callsBefore != n {
					t.Errorf("recovery took %d requests; want %d (one per credential)", calls-callsBefore, n)
				}
				t.Logf("recovery: all %d tokens fresh %v after the provider healed (fake time; the next probe)", n, time.Since(healed))
			})
		})
	}
}

// A refusal of the probing credential (its grant is dead) is an answer:
// the endpoint works, and the others refresh at once rather than wait for
// a probe that would never come.
func TestProbeRefusedByTheCredentialEndsTheOutage(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newFakeProvider(10*time.Minute, false)
		b := start(t, openStore(t, t.TempDir()), ccCred("a", p), ccCred("b", p), ccCred("c", p))
		defer b.Close()
		for _, n := range []string{"a", "b", "c"} {
			mustToken(t, b, n)
		}
		p.failFor(100, &sources.ProviderError{Status: 502})
		time.Sleep(11 * time.Minute)
		synctest.Wait()
		p.heal()
		p.failNext(&sources.ProviderError{Status: 401, Code: "invalid_client"})
		time.Sleep(5 * time.Second)
		synctest.Wait()
		fresh := 0
		for _, n := range []string{"a", "b", "c"} {
			if _, ok := b.creds[n].handout(time.Now()); ok {
				fresh++
			}
		}
		if fresh != 2 {
			t.Errorf("%d of 3 credentials fresh after the probe was refused with invalid_client; want the 2 others", fresh)
		}
	})
}
