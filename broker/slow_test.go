package broker

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokenbroker/tokenbroker/broker/redistest"
	"github.com/tokenbroker/tokenbroker/broker/store/file"
	redisstore "github.com/tokenbroker/tokenbroker/broker/store/redis"
	"github.com/tokenbroker/tokenbroker/internal/fositetest"
	"github.com/tokenbroker/tokenbroker/sources"
	"github.com/tokenbroker/tokenbroker/sources/oauthtest"
)

// fositeCred is a rotating refresh_token credential at a fosite server.
func fositeCred(t *testing.T, srv *fositetest.Server, seed string) Credential {
	t.Helper()
	d, err := sources.Preset("generic", sources.RefreshToken)
	if err != nil {
		t.Fatal(err)
	}
	d.TokenURL, d.ClientAuth = srv.TokenURL, oauth2.AuthStyleInHeader
	e := &sources.Endpoint{Dialect: &d, Client: sources.Client{ID: srv.ClientID, Secret: sources.NewSecret(srv.ClientSecret)}}
	return Credential{Name: "slow", Provider: "fosite", Source: &sources.RefreshTokenSource{Endpoint: e},
		Fingerprint: "fp-slow", InitialRefreshToken: sources.NewSecret(seed)}
}

// slowObserver counts the requests reported slow and lost.
type slowObserver struct {
	heldObserver
	slow, lost atomic.Int64
}

func (o *slowObserver) RequestSlow(string) { o.slow.Add(1) }
func (o *slowObserver) AnswerLost(string)  { o.lost.Add(1) }

// A provider that acts on a refresh after the client's REQUEST_TIMEOUT,
// whatever the client does (fosite, which revokes the grant when a rotated
// refresh token comes back): the broker awaits the answer rather than send
// the spent token again, keeps handing out the current token meanwhile, and
// the grant stays alive.
func TestSlowRefreshIsAwaitedNotRepeated(t *testing.T) {
	srv := fositetest.Start(t, fositetest.Options{AccessLifetime: time.Hour})
	const timeout, delay = 100 * time.Millisecond, time.Second
	b, logs, obs := watchedBroker(t, Options{RequestTimeout: timeout, AnswerTimeout: time.Minute}, fositeCred(t, srv, srv.InitialRefreshToken(t)))
	first := mustToken(t, b, "slow")

	srv.Delay(delay, 1)
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- b.Refresh(context.Background(), "slow") }()
	for obs.slow.Load() == 0 { // past REQUEST_TIMEOUT, the request sent
		select {
		case err := <-done:
			t.Fatalf("the refresh ended (%v) before it was reported slow", err)
		case <-time.After(5 * time.Millisecond):
		}
	}
	if h := mustToken(t, b, "slow"); !h.AccessToken.Equal(first.AccessToken) {
		t.Error("a handout during the wait got another token; want the current one")
	}
	if err := <-done; err != nil {
		t.Fatalf("the slow refresh: %v; want it awaited and stored", err)
	}
	awaited := time.Since(start)
	if h := mustToken(t, b, "slow"); h.AccessToken.Equal(first.AccessToken) {
		t.Error("the slow refresh's token is not handed out")
	}
	if err := b.Refresh(context.Background(), "slow"); err != nil {
		t.Errorf("a further refresh: %v; want the grant alive", err)
	}
	t.Logf("the slow refresh was awaited %v (request timeout %v, provider delay %v); %d token requests, %d reuses",
		awaited.Round(time.Millisecond), timeout, delay, srv.TokenRequests(), srv.Reuses())
	if n := srv.Reuses(); n != 0 {
		t.Errorf("fosite saw %d reused refresh tokens; want 0", n)
	}
	if !strings.Contains(logs.String(), "awaiting its answer, not sending it again") || !strings.Contains(logs.String(), "credential=slow") {
		t.Errorf("no log line saying the slow request is awaited:\n%s", logs)
	}
}

// In a fleet of three on one redis-server, the broker holding the lock is
// the slow one: its lease outlives LockTTL many times over while it awaits
// the answer, the two others keep trying and never spend the token
// meanwhile, and the grant stays alive.
func TestSlowLockHolderKeepsTheFleetFromSpending(t *testing.T) {
	rs := redistest.Start(t)
	srv := fositetest.Start(t, fositetest.Options{AccessLifetime: time.Hour})
	seed := srv.InitialRefreshToken(t)
	const lockTTL, timeout, delay = 300 * time.Millisecond, 100 * time.Millisecond, 2 * time.Second
	var brokers []*Broker
	var obs []*slowObserver
	for range 3 {
		st, _ := redisstore.New(redisstore.Options{Client: rs.Client(), LockTTL: lockTTL})
		o := &slowObserver{}
		b, err := New(Options{Store: st, Logger: quiet, Observer: o, PeerWait: 50 * time.Millisecond,
			RequestTimeout: timeout, AnswerTimeout: time.Minute}, []Credential{fositeCred(t, srv, seed)})
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		brokers, obs = append(brokers, b), append(obs, o)
	}
	for _, b := range brokers {
		mustToken(t, b, "slow")
	}

	srv.Delay(delay, 1)
	start := time.Now()
	holder := make(chan error, 1)
	go func() { holder <- brokers[0].Refresh(context.Background(), "slow") }()
	for obs[0].slow.Load() == 0 { // past REQUEST_TIMEOUT, the request sent
		select {
		case err := <-holder:
			t.Fatalf("the holder's refresh ended (%v) before it was reported slow", err)
		case <-time.After(5 * time.Millisecond):
		}
	}
	// The others ask again and again while the holder waits.
	var wg sync.WaitGroup
	var tries atomic.Int64
	stop := make(chan struct{})
	for _, b := range brokers[1:] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				_ = b.Refresh(context.Background(), "slow")
				tries.Add(1)
			}
		}()
	}
	err := <-holder
	awaited := time.Since(start)
	spentMeanwhile := srv.Overlapping()
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatalf("the slow lock holder's refresh: %v; want it awaited and stored", err)
	}
	held := obs[1].held.Load() + obs[2].held.Load()
	t.Logf("the holder awaited its answer %v with a %v lease; the others tried %d times, found the lock held %d times, and sent %d requests meanwhile",
		awaited.Round(time.Millisecond), lockTTL, tries.Load(), held, spentMeanwhile)
	if spentMeanwhile > 0 {
		t.Errorf("%d token requests from other brokers while the holder awaited its answer; want 0", spentMeanwhile)
	}
	if awaited < 2*lockTTL || held == 0 {
		t.Errorf("awaited %v, lock found held %d times; want the lease to outlive %v while peers try", awaited, held, lockTTL)
	}
	for i, b := range brokers {
		if err := b.Refresh(context.Background(), "slow"); err != nil {
			t.Errorf("broker %d: a further refresh: %v; want the grant alive", i, err)
		}
	}
	if n := srv.Reuses(); n != 0 {
		t.Errorf("fosite saw %d reused refresh tokens; want 0", n)
	}
}

// watchedBroker starts a broker of c on a state dir, logging to the
// returned buffer and observed by the returned observer; the test's end
// closes it.
func watchedBroker(t *testing.T, opts Options, c Credential) (*Broker, *lockedBuffer, *slowObserver) {
	t.Helper()
	st, err := file.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	logs, obs := &lockedBuffer{}, &slowObserver{}
	opts.Store, opts.Logger, opts.Observer = st, slog.New(slog.NewTextHandler(logs, nil)), obs
	b, err := New(opts, []Credential{c})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b, logs, obs
}

// lockedBuffer is a log sink safe for the broker's goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// The provider rotates the refresh token, then drops the connection with
// no answer. The broker may try again (nothing else could revive the
// credential), says that the provider may have spent the token, and when
// the provider takes the retry for a reuse and revokes the grant, the
// credential asks for a new authorization and says why.
func TestLostAnswerAfterRotation(t *testing.T) {
	p := oauthtest.StartTest(t, oauthtest.Options{AccessLifetime: time.Hour, Rotate: true})
	p.AddClient(oauthtest.Client{ID: "fw", RedirectURI: "http://127.0.0.1/cb", Dialect: oauthtest.Firework})
	// A lost answer marks the endpoint failing: the retry is its probe.
	b, logs, obs := watchedBroker(t, Options{ProbeInterval: 20 * time.Millisecond}, fleetCred(p, p.IssueRefreshToken("fw")))
	mustToken(t, b, "fw")

	p.Inject(oauthtest.Fault{AfterProcessing: true, Hangup: true})
	if err := b.Refresh(context.Background(), "fw"); !errors.Is(err, sources.ErrAnswerLost) {
		t.Fatalf("refresh whose answer was lost: %v; want ErrAnswerLost", err)
	}
	st := b.Status()[0]
	for deadline := time.Now().Add(10 * time.Second); st.State != StateReauthorize && time.Now().Before(deadline); st = b.Status()[0] {
		time.Sleep(10 * time.Millisecond) // the probe retries by itself
	}
	if st.State != StateReauthorize || !strings.Contains(st.LastError, "answer to the previous refresh was lost") {
		t.Errorf("state %s, last error %q; want reauthorize, saying the previous answer was lost", st.State, st.LastError)
	}
	if !strings.Contains(logs.String(), "may have spent the refresh token") || obs.lost.Load() != 1 {
		t.Errorf("lost answers observed: %d; logs:\n%s\nwant 1, and a line saying the token may be spent", obs.lost.Load(), logs)
	}
	if ps := p.Stats(); ps.ReuseEvents != 1 {
		t.Errorf("reuse events %d; want 1 (the retry spent the rotated token)", ps.ReuseEvents)
	}
}

// A stop gives a sent refresh its grace, then cuts it and says that the
// refresh token may be spent.
func TestShutdownCutsASlowRefreshAndSaysSo(t *testing.T) {
	srv := fositetest.Start(t, fositetest.Options{AccessLifetime: time.Hour})
	b, logs, obs := watchedBroker(t, Options{RequestTimeout: 50 * time.Millisecond}, fositeCred(t, srv, srv.InitialRefreshToken(t)))
	mustToken(t, b, "slow")
	srv.Delay(time.Minute, 1)
	go func() { _ = b.Refresh(context.Background(), "slow") }()
	for obs.slow.Load() == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond) // the grace
	defer cancel()
	if err := b.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "the stop cut short a sent refresh") || !strings.Contains(logs.String(), "may have spent the refresh token") {
		t.Errorf("no log line saying the stop cut a sent refresh:\n%s", logs)
	}
}

// A password credential whose answer was lost starts a new grant with its
// password at once instead of spending the refresh token the provider may
// have spent: no reuse, so the grant whose tokens the fleet hands out
// stays alive.
func TestLostAnswerPasswordStartsOver(t *testing.T) {
	p := oauthtest.StartTest(t, oauthtest.Options{AccessLifetime: time.Hour, Rotate: true})
	p.AddClient(oauthtest.Client{ID: "vs", Secret: "vs-secret", Dialect: oauthtest.VSRS})
	p.AddUser("demo", "demo-password")
	d, err := sources.Preset("vsrs", sources.Password)
	if err != nil {
		t.Fatal(err)
	}
	d.TokenURL = p.TokenURL(oauthtest.VSRS)
	e := &sources.Endpoint{Dialect: &d, Client: sources.Client{ID: "vs", Secret: sources.NewSecret("vs-secret")}}
	src := &sources.PasswordSource{Endpoint: e, Username: "demo", Password: sources.NewSecret("demo-password")}
	fs, err := file.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	b := start(t, fs, Credential{Name: "vs", Provider: "vsrs", Source: src, Fingerprint: "fp-vs"})
	defer b.Close()
	first := mustToken(t, b, "vs")
	if err := b.Refresh(context.Background(), "vs"); err != nil { // the refresh token is used
		t.Fatal(err)
	}
	p.Inject(oauthtest.Fault{AfterProcessing: true, Hangup: true})
	// At once, under the same lock: a peer taking the lock next would
	// spend the token.
	if err := b.Refresh(context.Background(), "vs"); err != nil {
		t.Fatalf("refresh whose answer was lost: %v; want a new grant from the password at once", err)
	}
	h := mustToken(t, b, "vs")
	st := p.Stats()
	if st.ReuseEvents != 0 || st.ByGrant["password"] != 2 || st.ByGrant["refresh_token"] != 2 || !p.Valid(h.AccessToken.Reveal()) || h.AccessToken.Equal(first.AccessToken) {
		t.Errorf("reuse %d, grants %v, handout valid %v; want 0 reuse, password twice (first, after the loss), refresh_token twice, a valid new token",
			st.ReuseEvents, st.ByGrant, p.Valid(h.AccessToken.Reveal()))
	}
}

// REQUEST_TIMEOUT still bounds connecting and sending a refresh: one that
// was never written (the fake sends nothing) ends there, says so, and
// spent nothing.
func TestUnsentRefreshEndsAtTheRequestTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newFakeProvider(time.Hour, true, "rt-0")
		b := start(t, openStore(t, t.TempDir()), refreshCred("fw", p, "rt-0"))
		defer b.Close()
		mustToken(t, b, "fw")
		p.mu.Lock()
		p.delay = time.Minute
		p.mu.Unlock()
		start := time.Now()
		err := b.Refresh(context.Background(), "fw")
		if !errors.Is(err, errNotSent) || time.Since(start) != b.opts.RequestTimeout {
			t.Errorf("after %v: %v; want errNotSent at the request timeout (%v)", time.Since(start), err, b.opts.RequestTimeout)
		}
	})
}
