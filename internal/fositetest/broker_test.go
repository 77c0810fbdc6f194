package fositetest_test

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/broker/redistest"
	"github.com/tokenbroker/tokenbroker/broker/store/file"
	redisstore "github.com/tokenbroker/tokenbroker/broker/store/redis"
	"github.com/tokenbroker/tokenbroker/internal/fositetest"
	"github.com/tokenbroker/tokenbroker/internal/tbtest"
	"github.com/tokenbroker/tokenbroker/sources"
)

// The broker against a provider that revokes a grant when a rotated refresh
// token comes back, through the broker's public API only: this module is
// apart from the daemon's so that fosite's dependencies stay out of it.

// fositeCred is a rotating refresh_token credential at a fosite server.
func fositeCred(t *testing.T, srv *fositetest.Server, seed string) broker.Credential {
	t.Helper()
	d, err := sources.Preset("generic", sources.RefreshToken)
	if err != nil {
		t.Fatal(err)
	}
	d.TokenURL, d.ClientAuth = srv.TokenURL, oauth2.AuthStyleInHeader
	e := &sources.Endpoint{Dialect: &d, Client: sources.Client{ID: srv.ClientID, Secret: sources.NewSecret(srv.ClientSecret)}}
	return broker.Credential{Name: "slow", Provider: "fosite", Source: &sources.RefreshTokenSource{Endpoint: e},
		Fingerprint: "fp-slow", InitialRefreshToken: sources.NewSecret(seed)}
}

// slowObserver counts the requests reported slow and the lock found held.
type slowObserver struct {
	slow, lost, held atomic.Int64
}

func (*slowObserver) Refreshed(string, string, broker.Result, time.Duration) {}
func (o *slowObserver) RequestSlow(string)                                   { o.slow.Add(1) }
func (o *slowObserver) AnswerLost(string)                                    { o.lost.Add(1) }
func (*slowObserver) Endpoint(string, broker.EndpointEvent)                  {}
func (o *slowObserver) LockWaited(_ string, _ time.Duration, outcome string) {
	if outcome == "held" {
		o.held.Add(1)
	}
}

// watchedBroker starts a broker of c on a state dir, logging to the
// returned buffer and observed by the returned observer; the test's end
// closes it.
func watchedBroker(t *testing.T, opts broker.Options, c broker.Credential) (*broker.Broker, *tbtest.SyncBuffer, *slowObserver) {
	t.Helper()
	store, err := file.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	logs, obs := &tbtest.SyncBuffer{}, &slowObserver{}
	opts.Store, opts.Logger, opts.Observer = store, slog.New(slog.NewTextHandler(logs, nil)), obs
	b, err := broker.New(opts, []broker.Credential{c})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b, logs, obs
}

func mustToken(t *testing.T, b *broker.Broker, name string) broker.Handout {
	t.Helper()
	h, err := b.Token(context.Background(), name)
	if err != nil {
		t.Fatalf("Token(%q): %v", name, err)
	}
	return h
}

// A provider that acts on a refresh after the client's REQUEST_TIMEOUT,
// whatever the client does (fosite, which revokes the grant when a rotated
// refresh token comes back): the broker awaits the answer rather than send
// the spent token again, keeps handing out the current token meanwhile, and
// the grant stays alive.
func TestSlowRefreshIsAwaitedNotRepeated(t *testing.T) {
	srv := fositetest.Start(t, fositetest.Options{AccessLifetime: time.Hour})
	const timeout, delay = 500 * time.Millisecond, 2 * time.Second // a timeout a loaded CI machine still sends within
	b, logs, obs := watchedBroker(t, broker.Options{RequestTimeout: timeout, AnswerTimeout: time.Minute}, fositeCred(t, srv, srv.InitialRefreshToken(t)))
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
	const lockTTL, timeout, delay = 300 * time.Millisecond, 500 * time.Millisecond, 2 * time.Second
	var brokers []*broker.Broker
	var obs []*slowObserver
	for range 3 {
		store, _ := redisstore.New(redisstore.Options{Client: rs.Client(), LockTTL: lockTTL})
		o := &slowObserver{}
		b, err := broker.New(broker.Options{Store: store, Logger: slog.New(slog.DiscardHandler), Observer: o, PeerWait: 50 * time.Millisecond,
			RequestTimeout: timeout, AnswerTimeout: time.Minute}, []broker.Credential{fositeCred(t, srv, seed)})
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

// A stop gives a sent refresh its grace, then cuts it and says that the
// refresh token may be spent.
func TestShutdownCutsASlowRefreshAndSaysSo(t *testing.T) {
	srv := fositetest.Start(t, fositetest.Options{AccessLifetime: time.Hour})
	b, logs, obs := watchedBroker(t, broker.Options{RequestTimeout: 500 * time.Millisecond}, fositeCred(t, srv, srv.InitialRefreshToken(t)))
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
