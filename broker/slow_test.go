package broker

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/tokenbroker/tokenbroker/broker/store/file"
	"github.com/tokenbroker/tokenbroker/internal/tbtest"
	"github.com/tokenbroker/tokenbroker/sources"
	"github.com/tokenbroker/tokenbroker/sources/oauthtest"
)

// slowObserver counts the requests reported slow and lost.
type slowObserver struct {
	heldObserver
	slow, lost atomic.Int64
}

func (o *slowObserver) RequestSlow(string) { o.slow.Add(1) }
func (o *slowObserver) AnswerLost(string)  { o.lost.Add(1) }

// watchedBroker starts a broker of c on a state dir, logging to the
// returned buffer and observed by the returned observer; the test's end
// closes it.
func watchedBroker(t *testing.T, opts Options, c Credential) (*Broker, *tbtest.SyncBuffer, *slowObserver) {
	t.Helper()
	st, err := file.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	logs, obs := &tbtest.SyncBuffer{}, &slowObserver{}
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
	e := &sources.Endpoint{Dialect: &d, Client: sources.Client{ID: "vs"}}
	src := &sources.PasswordSource{Endpoint: e, Username: "demo",
		Secrets: sources.StaticSecrets(sources.Secrets{ClientSecret: sources.NewSecret("vs-secret"), Password: sources.NewSecret("demo-password")})}
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
