package broker

import (
	"context"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bsm/redislock"

	"github.com/tokenbroker/tokenbroker/broker/redistest"
	redisstore "github.com/tokenbroker/tokenbroker/broker/store/redis"
	"github.com/tokenbroker/tokenbroker/broker/store/storetest"
	"github.com/tokenbroker/tokenbroker/sources"
	"github.com/tokenbroker/tokenbroker/sources/oauthtest"
)

func fleetCred(p *oauthtest.Provider, seed string) Credential {
	d, _ := sources.Preset("firework", sources.RefreshToken)
	d.TokenURL = p.TokenURL(oauthtest.Firework)
	e := &sources.Endpoint{Dialect: &d, HTTP: &http.Client{Timeout: 5 * time.Second}, Client: sources.Client{ID: "fw", RedirectURI: "http://127.0.0.1/cb"}}
	return Credential{Name: "fw", Provider: "firework", Source: &sources.RefreshTokenSource{Endpoint: e}, Fingerprint: "fp", InitialRefreshToken: sources.NewSecret(seed)}
}

// A handout costs no Redis command; a refresh costs a handful.
func TestRedisCommandsPerHandoutAndRefresh(t *testing.T) {
	_, b, hook := countedBroker(t)
	if _, err := b.Token(context.Background(), "fw"); err != nil {
		t.Fatal(err)
	}
	waitQuiet(t, hook) // the broker's own event and its re-read come later
	before := hook.N.Load()
	for range 10000 {
		if _, err := b.Token(context.Background(), "fw"); err != nil {
			t.Fatal(err)
		}
	}
	if n := hook.N.Load() - before; n != 0 {
		t.Errorf("10000 handouts sent %d Redis commands; want 0", n)
	}
	for i := range 2 { // the second run has the scripts cached
		before = hook.N.Load()
		if err := b.Refresh(context.Background(), "fw"); err != nil {
			t.Fatal(err)
		}
		waitQuiet(t, hook)
		n := hook.N.Load() - before
		t.Logf("refresh %d: %d Redis commands", i+1, n)
		if i == 1 && n > 6 {
			t.Errorf("a refresh sent %d Redis commands; want <= 6", n)
		}
	}
}

// A broker that dies holding the lock (it stops extending its lease) delays
// the fleet by one lease at most: another broker refreshes after it expires,
// handouts stay valid throughout, and no refresh token is reused.
func TestDeadLockHolderIsReplacedAfterTheLease(t *testing.T) {
	srv := redistest.Start(t)
	const life = 6 * time.Second
	p := oauthtest.StartTest(t, oauthtest.Options{AccessLifetime: life, Rotate: true})
	p.AddClient(oauthtest.Client{ID: "fw", RedirectURI: "http://127.0.0.1/cb", Dialect: oauthtest.Firework})
	seed := p.IssueRefreshToken("fw")
	const lease = 500 * time.Millisecond
	rs, _ := redisstore.New(redisstore.Options{Client: srv.Client(), LockTTL: lease})
	obs := &heldObserver{}
	// Refreshing at 40-50% of the life (not 75-85%) ends the dead holder's
	// lease, one lease after the refresh point, >= 1.5 s before handouts need
	// the new token (at 5 s), so a slow machine cannot fail a handout.
	b, err := New(Options{Store: rs, Logger: quiet, PeerWait: 200 * time.Millisecond, RefreshAt: 0.5, Observer: obs},
		[]Credential{fleetCred(p, seed)})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	first, err := b.Token(context.Background(), "fw")
	if err != nil {
		t.Fatal(err)
	}
	// The next refresh point is set just after the first token is handed out.
	st := b.Status()[0]
	for deadline := time.Now().Add(10 * time.Second); !st.NextRefresh.After(first.Expiry.Add(-life)); st = b.Status()[0] {
		if time.Now().After(deadline) {
			t.Fatal("no refresh scheduled after the first token")
		}
		time.Sleep(10 * time.Millisecond)
	}

	// The "dead" broker takes the lock well before the refresh point, so the
	// refresh is sure to find it, and never extends or releases it (Obtain,
	// not Lock, which would start an extender). Its TTL ends one lease after
	// the refresh point, as if it had extended until then and died.
	dead := redislock.New(srv.Client())
	before := time.Now() // the lock's TTL starts after this
	if d := st.NextRefresh.Sub(before); d < time.Second {
		t.Fatalf("the refresh point is only %v away; too close to take the lock first", d)
	}
	// Redis counts whole ms; no broker can lock before expires.
	ttl := (st.NextRefresh.Sub(before) + lease).Truncate(time.Millisecond)
	expires := before.Add(ttl)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	_, err = dead.Obtain(ctx, "tokenbroker:{"+b.creds["fw"].key+"}:lock", ttl, nil)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	if g := b.Status()[0].Generation; g != st.Generation {
		t.Fatalf("the broker refreshed (generation %d to %d) before the dead holder took the lock", st.Generation, g)
	}

	h := first
	for h.AccessToken.Equal(first.AccessToken) { // until the broker refreshes
		time.Sleep(20 * time.Millisecond)
		if h, err = b.Token(context.Background(), "fw"); err != nil || !p.Valid(h.AccessToken.Reveal()) {
			t.Fatalf("handout while the dead holder's lease runs: %v", err)
		}
	}
	issued := h.Expiry.Add(-life)
	t.Logf("the lock was found held %d times; the refresh came %v after it expired", obs.held.Load(), issued.Sub(expires))
	if obs.held.Load() == 0 {
		t.Error("no refresh found the dead holder's lock held")
	}
	if issued.Before(expires) {
		t.Errorf("refreshed %v before the dead holder's lock expired; want only after it", expires.Sub(issued))
	}
	if st := p.Stats(); st.ReuseEvents != 0 {
		t.Errorf("reuse events = %d; want 0", st.ReuseEvents)
	}
}

// heldObserver counts the refresh attempts that found the lock held.
type heldObserver struct{ held atomic.Int64 }

func (*heldObserver) Refreshed(string, string, Result, time.Duration) {}
func (*heldObserver) RequestSlow(string)                              {}
func (*heldObserver) AnswerLost(string)                               {}
func (*heldObserver) Endpoint(string, EndpointEvent)                  {}
func (o *heldObserver) LockWaited(_ string, _ time.Duration, outcome string) {
	if outcome == "held" {
		o.held.Add(1)
	}
}

// waitQuiet waits until the broker has sent no Redis command for 15 polls
// 20 ms apart: its own event and the re-read that event triggers come after
// the call that caused them returned. Counting polls, not elapsed time, keeps
// a stall of the whole process from passing for quiet.
func waitQuiet(t *testing.T, hook *storetest.CountingHook) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	last := hook.N.Load()
	for still := 0; still < 15; {
		if time.Now().After(deadline) {
			t.Fatal("the broker's Redis commands did not settle within 10 s")
		}
		time.Sleep(20 * time.Millisecond)
		if n := hook.N.Load(); n != last {
			last, still = n, 0
		} else {
			still++
		}
	}
}

// countedBroker starts a broker on a fresh redis-server whose client counts
// the commands it sends, with one rotating credential "fw".
func countedBroker(t *testing.T) (*redistest.Server, *Broker, *storetest.CountingHook) {
	t.Helper()
	srv := redistest.Start(t)
	p := oauthtest.StartTest(t, oauthtest.Options{AccessLifetime: time.Hour, Rotate: true})
	p.AddClient(oauthtest.Client{ID: "fw", RedirectURI: "http://127.0.0.1/cb", Dialect: oauthtest.Firework})
	c := srv.Client()
	hook := &storetest.CountingHook{}
	c.AddHook(hook)
	st, _ := redisstore.New(redisstore.Options{Client: c})
	b, err := New(Options{Store: st, Logger: quiet}, []Credential{fleetCred(p, p.IssueRefreshToken("fw"))})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return srv, b, hook
}
