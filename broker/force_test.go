package broker

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/tokenbroker/tokenbroker/sources"
)

// A corrupt record is reported (naming the file, not its content) and the
// credential starts afresh from its configuration; the next write replaces it.
func TestCorruptRecordIsReportedAndReplaced(t *testing.T) {
	dir := t.TempDir()
	p := newFakeProvider(time.Hour, false)
	c := Credential{Name: "cc", Provider: "fake", Source: fakeSource{p, sources.ClientCredentials}, Fingerprint: "cc"}
	key := storeKey(c)
	if err := os.WriteFile(filepath.Join(dir, key+".json"), []byte(`{"v":1,"access_token":"LEAKED-IF-PRINTED`), 0o600); err != nil {
		t.Fatal(err)
	}
	s := openStore(t, dir)
	defer s.Close()
	_, err := s.Load(context.Background(), key)
	if err == nil || strings.Contains(err.Error(), "LEAKED") || !strings.Contains(err.Error(), key) {
		t.Errorf("Load(corrupt) = %v; want an error naming the file and not its content", err)
	}
	b := start(t, s, c)
	defer b.Close()
	mustToken(t, b, "cc")
	if _, err := s.Load(context.Background(), key); err != nil {
		t.Errorf("after a refresh the corrupt record is still unreadable: %v", err)
	}
}

// Refresh calls the provider even when the stored token is fresh.
func TestForcedRefreshCallsProvider(t *testing.T) {
	p := newFakeProvider(time.Hour, false)
	b := start(t, openStore(t, t.TempDir()), Credential{Name: "cc", Provider: "fake", Source: fakeSource{p, sources.ClientCredentials}, Fingerprint: "cc"})
	defer b.Close()
	first := mustToken(t, b, "cc")
	if err := b.Refresh(context.Background(), "cc"); err != nil {
		t.Fatal(err)
	}
	if calls, _ := p.stats(); calls != 2 {
		t.Errorf("provider calls = %d after a forced refresh; want 2", calls)
	}
	if h := mustToken(t, b, "cc"); h.AccessToken.Equal(first.AccessToken) {
		t.Error("forced refresh did not replace the token")
	}
}

// A forced refresh that arrives while another refresh is already talking to
// the provider does not settle for that one (it may carry a token issued
// before the operator asked): it makes its own call afterwards.
func TestForcedRefreshDuringARefreshCallsAgain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newFakeProvider(time.Hour, false)
		b := start(t, openStore(t, t.TempDir()), Credential{Name: "cc", Provider: "fake", Source: fakeSource{p, sources.ClientCredentials}, Fingerprint: "cc"})
		defer b.Close()
		mustToken(t, b, "cc")
		p.mu.Lock()
		p.delay = time.Second
		p.mu.Unlock()
		go b.Refresh(context.Background(), "cc")
		synctest.Wait() // the first forced refresh waits on the provider
		if err := b.Refresh(context.Background(), "cc"); err != nil {
			t.Fatal(err)
		}
		if calls, _ := p.stats(); calls != 3 {
			t.Errorf("provider calls = %d; want 3 (first token, the refresh in flight, the one asked for during it)", calls)
		}
	})
}

// Shutdown lets a refresh already talking to the provider finish and save
// its answer (with a rotating provider, the only copy of the new refresh
// token), where Close cancels it.
func TestShutdownFinishesTheRefreshInFlight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newFakeProvider(time.Hour, true, "rt-0")
		st := openStore(t, t.TempDir())
		b := start(t, st, refreshCred("fw", p, "rt-0"))
		mustToken(t, b, "fw")
		p.mu.Lock()
		p.delay = time.Second
		p.mu.Unlock()
		go b.Refresh(context.Background(), "fw")
		synctest.Wait() // the refresh waits on the provider
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		b.Shutdown(ctx)
		rec, err := st.Load(context.Background(), b.creds["fw"].key)
		if err != nil {
			t.Fatal(err)
		}
		if calls, _ := p.stats(); calls != 2 || rec.Generation != 2 {
			t.Errorf("after Shutdown: %d provider calls, stored generation %d; want 2 and 2 (the refresh in flight saved)", calls, rec.Generation)
		}
		if err := b.Refresh(context.Background(), "fw"); err == nil {
			t.Error("a forced refresh after Shutdown reported success")
		}
	})
}

// A token in its last margin (still valid, no longer handed out) while the
// provider fails: callers asking all the time get 503s and do not turn the
// backoff into one provider request per handout.
func TestHandoutsInTheLastMarginKeepTheBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newFakeProvider(10*time.Minute, false)
		b := start(t, openStore(t, t.TempDir()), Credential{Name: "cc", Provider: "fake", Source: fakeSource{p, sources.ClientCredentials}, Fingerprint: "cc"})
		defer b.Close()
		mustToken(t, b, "cc")
		errs := make([]error, 10000)
		for i := range errs {
			errs[i] = errors.New("provider answered 503")
		}
		p.failNext(errs...)
		time.Sleep(9*time.Minute + 10*time.Second) // under a minute left: no handout
		synctest.Wait()
		before, _ := p.stats()
		for range 200 {
			if _, err := b.Token(context.Background(), "cc"); err == nil {
				t.Fatal("a token with under a minute left was handed out")
			}
			time.Sleep(time.Millisecond)
		}
		if calls, _ := p.stats(); calls-before > 10 {
			t.Errorf("200 handouts over 200 ms made %d provider requests; want the backoff to hold them to a few", calls-before)
		}
	})
}
