package broker

import (
	"context"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tokenbroker/tokenbroker/broker/redistest"
	"github.com/tokenbroker/tokenbroker/sources"
	"github.com/tokenbroker/tokenbroker/sources/oauthtest"
)

// countingHook counts the Redis commands a client sends.
type countingHook struct{ n atomic.Int64 }

func (h *countingHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *countingHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error { h.n.Add(1); return next(ctx, cmd) }
}
func (h *countingHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error { h.n.Add(int64(len(cmds))); return next(ctx, cmds) }
}

func fleetCred(p *oauthtest.Provider, seed string) Credential {
	d, _ := sources.Preset("firework", sources.RefreshToken)
	d.TokenURL = p.TokenURL(oauthtest.Firework)
	e := &sources.Endpoint{Dialect: d, HTTP: &http.Client{Timeout: 5 * time.Second}, Client: sources.Client{ID: "fw", RedirectURI: "http://127.0.0.1/cb"}}
	return Credential{Name: "fw", Provider: "firework", Source: &sources.RefreshTokenSource{Endpoint: e}, Fingerprint: "fp", InitialRefreshToken: sources.NewSecret(seed)}
}

// A handout costs no Redis command; a refresh costs a handful.
func TestRedisCommandsPerHandoutAndRefresh(t *testing.T) {
	_, b, hook := countedBroker(t)
	if _, err := b.Token(context.Background(), "fw"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // let the broker's own event arrive
	before := hook.n.Load()
	for range 10000 {
		if _, err := b.Token(context.Background(), "fw"); err != nil {
			t.Fatal(err)
		}
	}
	if n := hook.n.Load() - before; n != 0 {
		t.Errorf("10000 handouts sent %d Redis commands; want 0", n)
	}
	for i := range 2 { // the second run has the scripts cached
		before = hook.n.Load()
		if err := b.Refresh(context.Background(), "fw"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
		n := hook.n.Load() - before
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
	p := oauthtest.StartTest(t, oauthtest.Options{AccessLifetime: 6 * time.Second, Rotate: true})
	p.AddClient(oauthtest.Client{ID: "fw", RedirectURI: "http://127.0.0.1/cb", Dialect: oauthtest.Firework})
	seed := p.IssueRefreshToken("fw")
	const lease = 500 * time.Millisecond
	store, _ := NewRedisStore(RedisOptions{Client: srv.Client(), LockTTL: lease})
	b, err := New(Options{Store: store, Logger: quiet, PeerWait: 200 * time.Millisecond}, []Credential{fleetCred(p, seed)})
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

	// The "dead" broker takes the lock just before the refresh point and never
	// extends or releases it.
	dead, _ := NewRedisStore(RedisOptions{Client: srv.Client(), LockTTL: lease})
	time.Sleep(time.Until(first.Expiry.Add(-6 * time.Second * 30 / 100)))
	l, err := dead.Lock(context.Background(), b.creds["fw"].key)
	if err != nil {
		t.Fatal(err)
	}
	dl := l.(*redisLease)
	dl.once.Do(func() { close(dl.stop) })
	dl.wg.Wait()
	took := time.Now()

	for time.Since(took) < 3*time.Second {
		h, err := b.Token(context.Background(), "fw")
		if err != nil || !p.Valid(h.AccessToken.Reveal()) {
			t.Fatalf("handout while the dead holder's lease runs: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	h, _ := b.Token(context.Background(), "fw")
	if h.AccessToken.Equal(first.AccessToken) {
		t.Error("no refresh after the dead holder's lease expired")
	}
	if issued := h.Expiry.Add(-6 * time.Second); issued.Before(took.Add(lease - 100*time.Millisecond)) {
		t.Errorf("refreshed %v after the lock was taken; want only after the %v lease ran out", issued.Sub(took), lease)
	}
	if st := p.Stats(); st.ReuseEvents != 0 {
		t.Errorf("reuse events = %d; want 0", st.ReuseEvents)
	}
}

// countedBroker starts a broker on a fresh redis-server whose client counts
// the commands it sends, with one rotating credential "fw".
func countedBroker(t *testing.T) (*redistest.Server, *Broker, *countingHook) {
	t.Helper()
	srv := redistest.Start(t)
	p := oauthtest.StartTest(t, oauthtest.Options{AccessLifetime: time.Hour, Rotate: true})
	p.AddClient(oauthtest.Client{ID: "fw", RedirectURI: "http://127.0.0.1/cb", Dialect: oauthtest.Firework})
	c := srv.Client()
	hook := &countingHook{}
	c.AddHook(hook)
	store, _ := NewRedisStore(RedisOptions{Client: c})
	b, err := New(Options{Store: store, Logger: quiet}, []Credential{fleetCred(p, p.IssueRefreshToken("fw"))})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return srv, b, hook
}
