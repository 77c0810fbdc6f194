package broker

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/tokenbroker/tokenbroker/sources"
)

// fakeProvider issues tokens in memory with rotation and reuse detection,
// for engine tests that run in a synctest bubble (no network there). The
// real HTTP provider is exercised end to end elsewhere.
type fakeProvider struct {
	mu         sync.Mutex
	life       time.Duration
	refreshTTL time.Duration // refresh token lifetime reported; 0 = none
	rotate     bool
	delay      time.Duration
	live       map[string]bool // refresh tokens that work
	spent      map[string]bool // rotated away: presenting one is reuse
	fail       []error         // answers to give before issuing again
	calls      int
	at         []time.Time // when each call came
	reuse      int
	n          int
}

func newFakeProvider(life time.Duration, rotate bool, seeds ...string) *fakeProvider {
	p := &fakeProvider{life: life, rotate: rotate, live: map[string]bool{}, spent: map[string]bool{}}
	for _, s := range seeds {
		p.live[s] = true
	}
	return p
}

func (p *fakeProvider) stats() (calls, reuse int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.calls, p.reuse
}

func (p *fakeProvider) failNext(errs ...error) {
	p.mu.Lock()
	p.fail = append(p.fail, errs...)
	p.mu.Unlock()
}

func (p *fakeProvider) revokeAll() {
	p.mu.Lock()
	clear(p.live)
	p.mu.Unlock()
}

type fakeSource struct {
	p     *fakeProvider
	grant sources.Grant
}

func (s fakeSource) Grant() sources.Grant { return s.grant }

func (s fakeSource) Spends(sources.Token) bool { return s.grant == sources.RefreshToken }

func (s fakeSource) Token(ctx context.Context, prev sources.Token) (sources.Token, error) {
	start := time.Now()
	p := s.p
	if p.delay > 0 {
		select {
		case <-time.After(p.delay):
		case <-ctx.Done():
			return sources.Token{}, ctx.Err()
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls++
	p.at = append(p.at, start)
	if len(p.fail) > 0 {
		err := p.fail[0]
		p.fail = p.fail[1:]
		return sources.Token{}, err
	}
	t := sources.Token{IssuedAt: start, Expiry: start.Add(p.life)}
	if s.grant == sources.RefreshToken {
		rt := prev.RefreshToken.Reveal()
		if !p.live[rt] {
			if p.spent[rt] {
				p.reuse++
				clear(p.live) // revoke the family, as real servers do
			}
			return sources.Token{}, &sources.ProviderError{Grant: sources.RefreshToken, Status: 400, Code: "invalid_grant"}
		}
		t.RefreshToken = prev.RefreshToken
		if p.rotate {
			p.n++
			next := fmt.Sprintf("rt-%d", p.n)
			delete(p.live, rt)
			p.spent[rt] = true
			p.live[next] = true
			t.RefreshToken = sources.NewSecret(next)
		}
		if p.refreshTTL > 0 {
			t.RefreshExpiry = start.Add(p.refreshTTL)
		}
	}
	p.n++
	t.AccessToken = sources.NewSecret(fmt.Sprintf("at-%d", p.n))
	return t, nil
}
