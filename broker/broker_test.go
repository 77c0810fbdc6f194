package broker

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/tokenbroker/tokenbroker/broker/store"
	"github.com/tokenbroker/tokenbroker/broker/store/file"
	"github.com/tokenbroker/tokenbroker/sources"
)

var quiet = slog.New(slog.DiscardHandler)

func openStore(t *testing.T, dir string) *file.Store {
	t.Helper()
	s, err := file.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func start(t *testing.T, st store.Store, creds ...Credential) *Broker {
	t.Helper()
	b, err := New(Options{Store: st, Logger: quiet}, creds)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	return b
}

func refreshCred(name string, p *fakeProvider, seed string) Credential {
	return Credential{Name: name, Provider: "fake", Source: fakeSource{p, sources.RefreshToken},
		Fingerprint: "fp-" + name, InitialRefreshToken: sources.NewSecret(seed)}
}

func mustToken(t *testing.T, b *Broker, name string) Handout {
	t.Helper()
	h, err := b.Token(context.Background(), name)
	if err != nil {
		t.Fatalf("Token(%q): %v", name, err)
	}
	return h
}

// Over two hours of fake time, a client asking every second never waits and
// never gets a token with less than min(60 s, 10%) left, and the provider
// sees one refresh per ~80% of a lifetime.
func TestRefreshesBeforeExpiryWithoutMakingCallersWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newFakeProvider(10*time.Minute, true, "rt-0")
		b := start(t, openStore(t, t.TempDir()), refreshCred("fw", p, "rt-0"))
		defer b.Close()
		mustToken(t, b, "fw") // first token: waits for the initial request

		end := time.Now().Add(2 * time.Hour)
		for time.Now().Before(end) {
			before := time.Now()
			h := mustToken(t, b, "fw")
			if waited := time.Since(before); waited != 0 {
				t.Fatalf("handout waited %v; want 0 (refresh must be proactive)", waited)
			}
			if left := time.Until(h.Expiry); left < time.Minute {
				t.Fatalf("handout has %v left; want at least 60s", left)
			}
			time.Sleep(time.Second)
		}
		calls, reuse := p.stats()
		// 120 min / (10 min * 0.75..0.85) = 14..16 refreshes, plus the first.
		if calls < 15 || calls > 18 {
			t.Errorf("provider calls = %d over 2h with 10m tokens; want 15..18", calls)
		}
		if reuse != 0 {
			t.Errorf("reuse events = %d; want 0", reuse)
		}
	})
}

// A rotated refresh token is on disk when the new access token is handed
// out; a broker restarted on the same state dir uses it, never the stale one
// from its environment, and serves the stored token without calling out.
func TestRotatedRefreshTokenSurvivesRestart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir := t.TempDir()
		p := newFakeProvider(time.Hour, true, "rt-0")
		st := openStore(t, dir)
		b := start(t, st, refreshCred("fw", p, "rt-0"))
		h := mustToken(t, b, "fw")
		rec, err := st.Load(context.Background(), b.creds["fw"].key)
		if err != nil {
			t.Fatal(err)
		}
		if got := rec.Token.RefreshToken.Reveal(); got == "rt-0" || !p.live[got] {
			t.Fatalf("stored refresh token %q; want the rotated, live one", got)
		}
		if !rec.Token.AccessToken.Equal(h.AccessToken) {
			t.Fatal("handed-out access token is not the stored one")
		}
		b.Close()
		st.Close()

		callsBefore, _ := p.stats()
		b2 := start(t, openStore(t, dir), refreshCred("fw", p, "rt-0"))
		defer b2.Close()
		if h2 := mustToken(t, b2, "fw"); !h2.AccessToken.Equal(h.AccessToken) {
			t.Error("restarted broker did not serve the stored token")
		}
		if calls, _ := p.stats(); calls != callsBefore {
			t.Errorf("restarted broker called the provider %d times before its first handout; want 0", calls-callsBefore)
		}
		if err := b2.Refresh(context.Background(), "fw"); err != nil {
			t.Fatalf("refresh after restart: %v", err)
		}
		if _, reuse := p.stats(); reuse != 0 {
			t.Errorf("reuse events = %d; the restarted broker spent a stale refresh token", reuse)
		}
	})
}

// An operator who changes the configured refresh token wins over the stored
// rotated one.
func TestChangedConfiguredRefreshTokenWins(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir := t.TempDir()
		p := newFakeProvider(time.Hour, true, "rt-0")
		st := openStore(t, dir)
		b := start(t, st, refreshCred("fw", p, "rt-0"))
		mustToken(t, b, "fw")
		b.Close()
		st.Close()

		p.revokeAll()
		p.mu.Lock()
		p.live["operator-new"] = true
		p.mu.Unlock()
		b2 := start(t, openStore(t, dir), refreshCred("fw", p, "operator-new"))
		defer b2.Close()
		if err := b2.Refresh(context.Background(), "fw"); err != nil {
			t.Fatalf("refresh with the operator's new token: %v", err)
		}
		if s := b2.Status()[0]; s.State != StateOK || s.Generation < 2 {
			t.Errorf("status = %+v; want ok with a generation above the stored one", s)
		}
	})
}

// invalid_grant stops all retries, and handouts say what to do.
func TestInvalidGrantNeedsReauthorization(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newFakeProvider(10*time.Minute, true, "rt-0")
		b := start(t, openStore(t, t.TempDir()), refreshCred("fw", p, "rt-0"))
		defer b.Close()
		mustToken(t, b, "fw")
		p.revokeAll()
		time.Sleep(time.Hour)
		calls, _ := p.stats()
		time.Sleep(time.Hour)
		if again, _ := p.stats(); again != calls {
			t.Errorf("provider called %d more times after invalid_grant; want 0", again-calls)
		}
		_, err := b.Token(context.Background(), "fw")
		var ue *UnavailableError
		if !errors.As(err, &ue) || ue.State != StateReauthorize {
			t.Fatalf("Token error = %v; want UnavailableError in state reauthorize", err)
		}
		if !strings.Contains(ue.Advice(), "authorize") || !strings.Contains(err.Error(), `"fw"`) {
			t.Errorf("error %q / advice %q should name the credential and say to authorize", err, ue.Advice())
		}
	})
}

// Transient failures are retried with backoff that honours Retry-After,
// while the still valid token keeps being served.
func TestTransientFailuresBackOffAndKeepServing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newFakeProvider(30*time.Minute, false)
		b := start(t, openStore(t, t.TempDir()),
			Credential{Name: "cc", Provider: "fake", Source: fakeSource{p, sources.ClientCredentials}, Fingerprint: "cc"})
		defer b.Close()
		mustToken(t, b, "cc")
		busy := &sources.ProviderError{Status: 429, RetryAfter: 10 * time.Second}
		p.failNext(busy, busy, busy, busy, busy)
		for {
			mustToken(t, b, "cc") // the first token stays valid throughout
			if calls, _ := p.stats(); calls >= 7 {
				break
			}
			time.Sleep(time.Second)
		}
		p.mu.Lock()
		at := p.at
		p.mu.Unlock()
		for i := 2; i < 7; i++ {
			if gap := at[i].Sub(at[i-1]); gap < 10*time.Second {
				t.Errorf("attempt %d came %v after a Retry-After: 10s answer; want >= 10s", i+1, gap)
			}
		}
		if s := b.Status()[0]; s.State != StateOK || s.Failures != 0 {
			t.Errorf("status after recovery = %+v; want ok", s)
		}
	})
}

// Callers that arrive while no token exists share the one request in flight.
func TestConcurrentHandoutsShareOneRefresh(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newFakeProvider(time.Hour, false)
		p.delay = 2 * time.Second
		b := start(t, openStore(t, t.TempDir()),
			Credential{Name: "cc", Provider: "fake", Source: fakeSource{p, sources.ClientCredentials}, Fingerprint: "cc"})
		defer b.Close()
		var wg sync.WaitGroup
		for range 100 {
			wg.Go(func() { mustToken(t, b, "cc") })
		}
		wg.Wait()
		if calls, _ := p.stats(); calls != 1 {
			t.Errorf("provider calls = %d for 100 concurrent first handouts; want 1", calls)
		}
	})
}

// A refresh token that expires is spent before it dies, even when the access
// token lives longer and nobody asks for a token.
func TestExpiringRefreshTokenIsUsedInTime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newFakeProvider(24*time.Hour, true, "rt-0")
		p.refreshTTL = time.Hour
		b := start(t, openStore(t, t.TempDir()), refreshCred("fw", p, "rt-0"))
		defer b.Close()
		mustToken(t, b, "fw")
		time.Sleep(3 * time.Hour)
		calls, reuse := p.stats()
		if calls < 4 || reuse != 0 {
			t.Errorf("calls = %d, reuse = %d over 3h with 1h refresh tokens; want >= 4 refreshes and no reuse", calls, reuse)
		}
	})
}

func TestUnknownCredential(t *testing.T) {
	b := start(t, openStore(t, t.TempDir()))
	defer b.Close()
	if _, err := b.Token(context.Background(), "nope"); !errors.Is(err, ErrUnknownCredential) {
		t.Errorf("Token(nope) = %v; want ErrUnknownCredential", err)
	}
}

// unlockable is a store whose shared lock cannot be taken, as when Redis is
// unreachable; records still reach the local file store.
type unlockable struct{ *file.Store }

func (s unlockable) Acquire(ctx context.Context, key string, mode store.Mode) (store.Claim, error) {
	if mode&store.NoLock == 0 {
		return nil, errors.New("redis: connection refused")
	}
	return s.Store.Acquire(ctx, key, mode)
}

func (unlockable) Lock(context.Context, string) (store.Lock, error) {
	return nil, errors.New("redis: connection refused")
}

// Without the lock, client_credentials refreshes as usual, but a refresh
// token is never spent: every broker of a fleet would spend it at once.
// The credential says why it has no token.
func TestRefreshWithoutTheLock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := unlockable{openStore(t, t.TempDir())}
		cc := newFakeProvider(10*time.Minute, false)
		rt := newFakeProvider(time.Hour, true, "rt-0")
		b := start(t, st,
			Credential{Name: "cc", Provider: "fake", Source: fakeSource{cc, sources.ClientCredentials}, Fingerprint: "cc"},
			refreshCred("rt", rt, "rt-0"))
		defer b.Close()
		mustToken(t, b, "cc")
		time.Sleep(30 * time.Minute)
		if calls, _ := cc.stats(); calls < 3 {
			t.Errorf("client_credentials refreshed %d times in 30 min of 10 min tokens without the lock; want >= 3", calls)
		}
		_, err := b.Token(context.Background(), "rt")
		var ue *UnavailableError
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), "never spent without it") {
			t.Errorf("refresh_token credential without the lock: %v; want unavailable, saying why", err)
		}
		if calls, reuse := rt.stats(); calls != 0 || reuse != 0 {
			t.Errorf("refresh token spent %d times without the lock (%d reuse); want never", calls, reuse)
		}
	})
}

// lockHookStore runs onLock once, before the first claim it is asked for.
type lockHookStore struct {
	*file.Store
	mu     sync.Mutex
	onLock func()
}

func (s *lockHookStore) Acquire(ctx context.Context, key string, mode store.Mode) (store.Claim, error) {
	s.mu.Lock()
	f := s.onLock
	s.onLock = nil
	s.mu.Unlock()
	if f != nil {
		f()
	}
	return s.Store.Acquire(ctx, key, mode)
}

// A peer's token that arrives (and is adopted through the store's event)
// while a scheduled refresh waits for the lock ends that refresh: the
// re-read under the lock finds nothing newer than what is held, but the
// token in hand is fresh, so calling the provider would waste a cycle.
func TestRefreshSkipsATokenAdoptedWhileWaitingForTheLock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newFakeProvider(10*time.Minute, false)
		st := &lockHookStore{Store: openStore(t, t.TempDir())}
		b := start(t, st, Credential{Name: "cc", Provider: "fake", Source: fakeSource{p, sources.ClientCredentials}, Fingerprint: "cc"})
		defer b.Close()
		mustToken(t, b, "cc")
		c := b.creds["cc"]
		st.mu.Lock()
		st.onLock = func() { // a peer refreshed and its event came first
			now := time.Now()
			rec := store.Record{Generation: 2, UpdatedAt: now, Token: sources.Token{
				AccessToken: sources.NewSecret("peer-token"), IssuedAt: now, Expiry: now.Add(10 * time.Minute)}}
			if err := st.Store.Save(context.Background(), c.key, rec); err != nil {
				t.Error(err)
			}
			b.peerChanged(c.key)
		}
		st.mu.Unlock()
		time.Sleep(9 * time.Minute) // past the first token's refresh point
		synctest.Wait()
		if calls, _ := p.stats(); calls != 1 {
			t.Errorf("provider calls = %d; want 1 (the peer's token was in hand when the lock was taken)", calls)
		}
		if h := mustToken(t, b, "cc"); h.AccessToken.Reveal() != "peer-token" {
			t.Error("the broker does not hand out the peer's token")
		}
	})
}

// lostAckStore applies the next Save but reports a failure, as a write
// whose answer is lost (an fsync error after the rename, a dropped
// connection after the script ran).
type lostAckStore struct {
	*file.Store
	mu   sync.Mutex
	lose bool
}

func (s *lostAckStore) Acquire(ctx context.Context, key string, mode store.Mode) (store.Claim, error) {
	rec, err := s.Load(ctx, key)
	return store.NewClaim(store.HeldLock, rec, err, func(ctx context.Context, rec store.Record) error { return s.save(ctx, key, rec) }), nil
}

func (s *lostAckStore) save(ctx context.Context, key string, rec store.Record) error {
	err := s.Store.Save(ctx, key, rec)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lose && err == nil {
		s.lose = false
		return errors.New("connection reset after the write")
	}
	return err
}

// A save that landed though it reported a failure is found on the retry:
// the retry's fenced write is refused as stale, the stored record is the
// broker's own, and the broker hands that token out instead of keeping it
// unpublished.
func TestSaveThatLandedDespiteAnErrorIsPublished(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newFakeProvider(10*time.Minute, true, "rt-0")
		st := &lostAckStore{Store: openStore(t, t.TempDir())}
		b := start(t, st, refreshCred("fw", p, "rt-0"))
		defer b.Close()
		first := mustToken(t, b, "fw")
		st.mu.Lock()
		st.lose = true
		st.mu.Unlock()
		time.Sleep(8*time.Minute + 50*time.Second) // the scheduled refresh, its lost answer, the retry
		synctest.Wait()
		if h := mustToken(t, b, "fw"); h.AccessToken.Equal(first.AccessToken) {
			t.Error("after the retry the broker still hands out the token before the refresh")
		}
		time.Sleep(2 * time.Minute) // past the first token's life
		if _, err := b.Token(context.Background(), "fw"); err != nil {
			t.Errorf("handout after the first token's expiry: %v", err)
		}
		if calls, reuse := p.stats(); calls != 2 || reuse != 0 {
			t.Errorf("provider calls %d, reuse %d; want 2 (first, scheduled) and 0", calls, reuse)
		}
	})
}
