package broker

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker/redistest"
	"github.com/tokenbroker/tokenbroker/broker/store/file"
	"github.com/tokenbroker/tokenbroker/broker/store/fleet"
	"github.com/tokenbroker/tokenbroker/internal/crashpoint"
	"github.com/tokenbroker/tokenbroker/sources/oauthtest"
)

// fleetMember is one broker of a test fleet: its own state dir, a shared Redis.
type fleetMember struct {
	dir string
	b   *Broker
}

func startMember(t *testing.T, dir string, srv *redistest.Server, p *oauthtest.Provider, seed string) *fleetMember {
	t.Helper()
	return startSettlingMember(t, dir, srv, p, seed, 0)
}

// startSettlingMember is startMember with the fleet store's SettleTime
// (0: the default).
func startSettlingMember(t *testing.T, dir string, srv *redistest.Server, p *oauthtest.Provider, seed string, settle time.Duration) *fleetMember {
	t.Helper()
	local, err := file.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	st := fleet.New(local, newRedisStore(t, srv, 2*time.Second), fleet.Options{Logger: quiet, SettleTime: settle})
	b, err := New(Options{Store: st, Logger: quiet, PeerWait: 300 * time.Millisecond}, []Credential{fleetCred(p, seed)})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	m := &fleetMember{dir: dir, b: b}
	t.Cleanup(func() { m.stop() })
	return m
}

func (m *fleetMember) stop() {
	if m.b != nil {
		m.b.Close()
		m.b.opts.Store.Close()
		m.b = nil
	}
}

func handoutValid(t *testing.T, p *oauthtest.Provider, m *fleetMember, when string) {
	t.Helper()
	h, err := m.b.Token(context.Background(), "fw")
	if err != nil {
		t.Fatalf("%s: %v", when, err)
	}
	if !p.Valid(h.AccessToken.Reveal()) {
		t.Fatalf("%s: handed-out token is not valid at the provider", when)
	}
}

// A joining broker serves at once without calling the provider; Redis
// restarted empty, or flushed, is repaired from the brokers' local copies;
// a whole-fleet restart over an empty Redis loses no rotated refresh token.
func TestFleetSurvivesEmptyRedis(t *testing.T) {
	srv := redistest.Start(t)
	p := oauthtest.StartTest(t, oauthtest.Options{AccessLifetime: 2 * time.Second, Rotate: true})
	p.AddClient(oauthtest.Client{ID: "fw", RedirectURI: "http://127.0.0.1/cb", Dialect: oauthtest.Firework})
	seed := p.IssueRefreshToken("fw")
	dirs := []string{t.TempDir(), t.TempDir(), t.TempDir()}
	a := startMember(t, dirs[0], srv, p, seed)
	b := startMember(t, dirs[1], srv, p, seed)
	handoutValid(t, p, a, "first handout")

	before := p.Stats().TokenRequests
	c := startMember(t, dirs[2], srv, p, seed)
	handoutValid(t, p, c, "joining broker")
	if got := p.Stats().TokenRequests; got != before {
		t.Errorf("joining broker made %d provider requests before its first handout; want 0", got-before)
	}

	for i, fault := range []func(){srv.Restart, srv.Flush} {
		fault()
		if i == 0 {
			// The brokers' reconnection makes them put their records back
			// before any refresh needs them.
			rc := srv.Client()
			deadline := time.Now().Add(3 * time.Second)
			for n, _ := rc.Exists(context.Background(), "tokenbroker:{"+a.b.creds["fw"].key+"}:rec").Result(); n == 0; n, _ = rc.Exists(context.Background(), "tokenbroker:{"+a.b.creds["fw"].key+"}:rec").Result() {
				if time.Now().After(deadline) {
					t.Fatal("records not put back within 3s of Redis restarting empty")
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
		deadline := time.Now().Add(5 * time.Second) // 2.5 token lifetimes
		for time.Now().Before(deadline) {
			for _, m := range []*fleetMember{a, b, c} {
				handoutValid(t, p, m, fmt.Sprintf("after fault %d", i))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	// Whole fleet down, Redis restarted empty, fleet back from local copies.
	for _, m := range []*fleetMember{a, b, c} {
		m.stop()
	}
	srv.Restart()
	time.Sleep(3 * time.Second) // the stored access tokens expire; the refresh tokens must carry on
	a = startMember(t, dirs[0], srv, p, seed)
	b = startMember(t, dirs[1], srv, p, seed)
	c = startMember(t, dirs[2], srv, p, seed)
	for _, m := range []*fleetMember{a, b, c} {
		handoutValid(t, p, m, "after a whole-fleet restart over an empty Redis")
	}
	if st := p.Stats(); st.ReuseEvents != 0 {
		t.Errorf("reuse events = %d; want 0", st.ReuseEvents)
	}
}

// A broker that was down while a peer refreshed comes back after Redis lost
// its data: it puts its older record back, and the peer answers that write
// with the newer one. A refresh on the returning broker must wait for that
// answer instead of spending the refresh token the peer already spent.
func TestReturningBrokerDoesNotSpendAnOldRefreshTokenAfterRedisLostData(t *testing.T) {
	srv, p, seed := rotatingSetup(t)
	dirA, dirB := t.TempDir(), t.TempDir()
	a := startMember(t, dirA, srv, p, seed)
	b := startMember(t, dirB, srv, p, seed)
	handoutValid(t, p, a, "first handout")
	handoutValid(t, p, b, "first handout on b")
	b.stop()
	if err := a.b.Refresh(context.Background(), "fw"); err != nil { // b's copy is now one behind
		t.Fatal(err)
	}
	srv.Flush()
	b = startSettlingMember(t, dirB, srv, p, seed, 5*time.Second) // a loaded CI machine is slow to answer
	refreshWithoutReuse(t, p, a, b)
}

// Redis restarted empty while a refresh waits for peers after a put-back:
// the lock went with the data, and another broker may hold it now, so the
// waiting refresh gives up instead of spending the refresh token. (Found
// by the chaos run: two brokers spent one refresh token.)
func TestRefreshGivesUpALockLostWhileSettling(t *testing.T) {
	srv, p, _, before, done := settlingRefresh(t, 3*time.Second)
	srv.Restart()
	if err := <-done; err == nil || !strings.Contains(err.Error(), "lock was lost") {
		t.Errorf("refresh after its lock was lost: %v; want it to give up", err)
	}
	if got := p.Stats().TokenRequests; got != before {
		t.Errorf("the broker sent %d token requests on a lost lock; want 0", got-before)
	}
}

// Redis died between the provider's answer and the save, and came back
// empty: the broker that refreshed holds the only copy of the rotated
// refresh token. A peer that puts its older record back waits SettleTime
// for a newer one, so the refreshing broker must share it within that,
// however long the outage was (the chaos run: a peer spent the old token).
func TestRecordSavedWhileRedisWasDownReachesPeersInTime(t *testing.T) {
	srv, p, seed := rotatingSetup(t)
	a := startMember(t, t.TempDir(), srv, p, seed)
	b := startMember(t, t.TempDir(), srv, p, seed)
	handoutValid(t, p, a, "first handout")
	handoutValid(t, p, b, "first handout on b")

	var once sync.Once
	a.b.onStep = func(step string) {
		if step == crashpoint.AfterAnswer {
			once.Do(srv.Kill)
		}
	}
	if err := a.b.Refresh(context.Background(), "fw"); err != nil {
		t.Fatalf("refresh while Redis dies: %v; want the token saved locally", err)
	}
	time.Sleep(4 * time.Second) // long enough for reconnection backoffs to grow
	srv.Restart()
	refreshWithoutReuse(t, p, a, b)
}

// A refresh that reaches its provider call after Shutdown began (here: it
// was waiting for peers after a put-back) does not make it: the stop's
// grace could end after the provider rotated the token and before the
// answer is saved.
func TestShutdownStartsNoProviderRequest(t *testing.T) {
	_, p, m, before, done := settlingRefresh(t, time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := m.b.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err == nil || !strings.Contains(err.Error(), "stopping") {
		t.Errorf("forced refresh across a stop: %v; want it to say the broker is stopping", err)
	}
	if got := p.Stats().TokenRequests; got != before {
		t.Errorf("the stopping broker sent %d token requests; want 0", got-before)
	}
}

// settlingRefresh starts a broker that puts its record back into a flushed
// Redis, and a forced refresh on it, and returns once that refresh holds
// the lock and waits settle for peers; before is the provider's request
// count then, and done gets the refresh's result.
func settlingRefresh(t *testing.T, settle time.Duration) (srv *redistest.Server, p *oauthtest.Provider, m *fleetMember, before int, done chan error) {
	t.Helper()
	srv, p, seed := rotatingSetup(t)
	dir := t.TempDir()
	m = startMember(t, dir, srv, p, seed)
	handoutValid(t, p, m, "first handout")
	m.stop()
	srv.Flush()
	m = startSettlingMember(t, dir, srv, p, seed, settle) // puts its record back
	before = p.Stats().TokenRequests
	done = make(chan error, 1)
	go func() { done <- m.b.Refresh(context.Background(), "fw") }()
	rc := srv.Client()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if keys, _ := rc.Keys(context.Background(), "*:lock").Result(); len(keys) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the refresh never took the lock")
		}
	}
	return srv, p, m, before, done
}

// rotatingSetup starts Redis and a Firework provider that rotates refresh
// tokens and detects their reuse, and issues the operator's refresh token.
func rotatingSetup(t *testing.T) (*redistest.Server, *oauthtest.Provider, string) {
	t.Helper()
	srv := redistest.Start(t)
	p := oauthtest.StartTest(t, oauthtest.Options{AccessLifetime: time.Hour, Rotate: true})
	p.AddClient(oauthtest.Client{ID: "fw", RedirectURI: "http://127.0.0.1/cb", Dialect: oauthtest.Firework})
	return srv, p, p.IssueRefreshToken("fw")
}

// refreshWithoutReuse forces a refresh on b, which holds an older record
// than a, and checks that b spent no refresh token a had spent.
func refreshWithoutReuse(t *testing.T, p *oauthtest.Provider, a, b *fleetMember) {
	t.Helper()
	if err := b.b.Refresh(context.Background(), "fw"); err != nil {
		t.Fatalf("refresh on the broker behind: %v", err)
	}
	if st := p.Stats(); st.ReuseEvents != 0 {
		t.Fatalf("reuse events = %d; the broker behind spent a refresh token its peer had spent", st.ReuseEvents)
	}
	handoutValid(t, p, a, "after")
	handoutValid(t, p, b, "after, on b")
}
