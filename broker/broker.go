package broker

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tokenbroker/tokenbroker/broker/store"
	"github.com/tokenbroker/tokenbroker/internal/crashpoint"
	"github.com/tokenbroker/tokenbroker/sources"
)

// ErrUnknownCredential: no credential has that name.
var ErrUnknownCredential = errors.New("unknown credential")

// Credential is one named token to keep fresh.
type Credential struct {
	Name     string
	Provider string // for status and the per-provider refresh cap
	Source   sources.Source
	// Fingerprint names what makes this the same credential (token URL,
	// client id, grant, scopes, subject); it is part of the store key, so a
	// reused name with other settings never reads another's tokens.
	Fingerprint string
	// InitialRefreshToken is the operator's refresh token for a
	// refresh_token credential. A stored rotated one wins over it until the
	// operator changes it.
	InitialRefreshToken sources.Secret
	// Endpoint names the provider's token endpoint (say, the provider and
	// its token URL). Credentials with the same Endpoint share its health:
	// while it fails, one probe at a time goes to it. Default: Provider.
	Endpoint string
}

// Options tune the engine; zero values take the defaults.
type Options struct {
	Store  store.Store  // required
	Logger *slog.Logger // default slog.Default()
	// RefreshAt is the fraction of a token's lifetime after which it is
	// refreshed; Jitter spreads refreshes over [RefreshAt-Jitter, RefreshAt].
	RefreshAt, Jitter float64 // defaults 0.85, 0.10
	// HandoutWait bounds how long a handout waits for a refresh in flight
	// when no valid token is at hand.
	HandoutWait time.Duration // default 5s
	// RequestTimeout bounds one token request; for a request that spends
	// a refresh token, it bounds connecting and sending only.
	RequestTimeout time.Duration // default 30s
	// AnswerTimeout bounds the wait for the answer to a request that
	// spends a refresh token, once it was sent: the provider may be acting
	// on it, and sending it again would spend that token twice.
	AnswerTimeout time.Duration // default 5m
	// Backoff after transient failures: full jitter over an exponential
	// ramp from BackoffBase, capped at BackoffMax.
	BackoffBase, BackoffMax time.Duration // defaults 1s, 5m
	// ProviderConcurrency caps refreshes in flight per provider, so one slow
	// provider cannot starve others and a restart does not stampede one.
	ProviderConcurrency int // default 4
	// PeerWait bounds how long a broker that lost the refresh lock waits
	// for the holder's result before reading the store again.
	PeerWait time.Duration // default 2s
	// ProbeInterval is how often one probe goes to a failing provider
	// endpoint (never sooner than its Retry-After); the other credentials
	// behind it wait for a probe to succeed.
	ProbeInterval time.Duration // default 5s
	// Observer receives refresh events, for metrics.
	Observer Observer // default: none
	// Published, when set, is told each time a credential's token changes
	// to a new one that handouts give out from then on (a refresh saved, a
	// peer's token adopted, an authorization, a stored token at Start),
	// with until, the instant handouts stop giving it out (its expiry less
	// the handout floor). It runs with the credential's lock held: it must
	// copy what it needs and return at once.
	Published func(name string, h Handout, until time.Time)
}

// step marks a step of a refresh (a crashpoint constant): a crashtest
// build of the daemon may die there, and engine tests act there (onStep).
func (b *Broker) step(s string) {
	crashpoint.At(s)
	if b.onStep != nil {
		b.onStep(s)
	}
}

func (o *Options) defaults() {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.RefreshAt <= 0 || o.RefreshAt >= 1 {
		o.RefreshAt = 0.85
	}
	if o.Jitter <= 0 || o.Jitter >= o.RefreshAt {
		o.Jitter = 0.10
	}
	if o.HandoutWait <= 0 {
		o.HandoutWait = 5 * time.Second
	}
	if o.RequestTimeout <= 0 {
		o.RequestTimeout = 30 * time.Second
	}
	if o.AnswerTimeout <= 0 {
		o.AnswerTimeout = 5 * time.Minute
	}
	if o.BackoffBase <= 0 {
		o.BackoffBase = time.Second
	}
	if o.BackoffMax <= 0 {
		o.BackoffMax = 5 * time.Minute
	}
	if o.ProviderConcurrency <= 0 {
		o.ProviderConcurrency = 4
	}
	if o.PeerWait <= 0 {
		o.PeerWait = 2 * time.Second
	}
	if o.ProbeInterval <= 0 {
		o.ProbeInterval = 5 * time.Second
	}
	if o.Observer == nil {
		o.Observer = noObserver{}
	}
}

// minInterval keeps a provider that answers absurdly short lifetimes from
// turning the scheduler into a busy loop.
const minInterval = time.Second

// Broker keeps the credentials' tokens fresh and hands them out.
type Broker struct {
	opts   Options
	log    *slog.Logger
	creds  map[string]*cred
	byKey  map[string]*cred
	names  []string
	sched  *scheduler
	queues map[string]*refreshQueue // by provider
	eps    map[string]*endpoint     // by Credential.Endpoint, or Provider

	ctx      context.Context // the running broker's; nil before Start
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	draining atomic.Bool // Shutdown began: no new refresh starts

	authMu  sync.Mutex
	pending map[string]pendingAuth // by state

	onStep func(step string) // tests only: called at each step of a refresh
}

// State is a credential's condition.
type State string

// States.
const (
	StatePending     State = "pending"     // no token yet; the first request is on its way
	StateOK          State = "ok"          // a valid token is at hand
	StateRetrying    State = "retrying"    // the last refresh failed transiently; retrying with backoff
	StateReauthorize State = "reauthorize" // the refresh token is dead; an operator must authorize again
	StateRejected    State = "rejected"    // the provider refuses the configuration; an operator must fix it
)

type cred struct {
	Credential
	key  string
	seed string

	cur       atomic.Pointer[published]        // what handouts read; never holds a refresh token
	onPublish func(string, Handout, time.Time) // Options.Published

	mu          sync.Mutex
	gen         uint64
	tok         sources.Token // with the refresh token
	unsaved     bool          // tok could not be written yet
	force       bool          // the next refresh calls the provider even if a fresh token is stored
	inflight    chan struct{} // closed when the running refresh ends
	changed     chan struct{} // closed when a peer reports a change; nil until a refresh waits on it
	state       State
	lastErr     error
	lastRefresh time.Time
	nextRefresh time.Time
	failures    int
	answerLost  bool      // the last refresh was sent and its answer lost
	notBefore   time.Time // the provider's Retry-After: no request before it

	ep     *endpoint
	parked bool // in ep.waiting; guarded by ep.mu

	idx int // heap slot, guarded by scheduler.mu
	due time.Time
}

// New validates the credentials. Call Start to load state and begin.
func New(opts Options, creds []Credential) (*Broker, error) {
	opts.defaults()
	if opts.Store == nil {
		return nil, errors.New("broker: no store")
	}
	b := &Broker{opts: opts, log: opts.Logger, creds: map[string]*cred{}, byKey: map[string]*cred{}, sched: newScheduler(), queues: map[string]*refreshQueue{}, eps: map[string]*endpoint{}}
	for _, c := range creds {
		if err := CheckName(c.Name); err != nil {
			return nil, fmt.Errorf("broker: %w", err)
		}
		if c.Source == nil {
			return nil, fmt.Errorf("broker: credential %q has no source", c.Name)
		}
		if _, dup := b.creds[c.Name]; dup {
			return nil, fmt.Errorf("broker: credential %q is listed twice", c.Name)
		}
		cr := &cred{Credential: c, key: storeKey(c), seed: seedOf(c), idx: -1, state: StatePending, onPublish: opts.Published}
		cr.Fingerprint = "" // only key and seed need it; 10k of them are megabytes
		cr.Endpoint = ""    // only cr.ep needs it
		b.creds[c.Name], b.byKey[cr.key] = cr, cr
		b.names = append(b.names, c.Name)
		epKey := cmp.Or(c.Endpoint, c.Provider)
		if b.eps[epKey] == nil {
			b.eps[epKey] = newEndpoint(epKey, c.Provider)
		}
		cr.ep = b.eps[epKey]
		if b.queues[c.Provider] == nil {
			b.queues[c.Provider] = &refreshQueue{max: opts.ProviderConcurrency}
		}
	}
	slices.Sort(b.names)
	return b, nil
}

func storeKey(c Credential) string {
	sum := sha256.Sum256([]byte(c.Fingerprint))
	return c.Name + "." + hex.EncodeToString(sum[:8])
}

// seedOf names the operator's refresh token without revealing it.
func seedOf(c Credential) string {
	if c.InitialRefreshToken.IsZero() {
		return ""
	}
	sum := sha256.Sum256([]byte(c.Fingerprint + "\x00" + c.InitialRefreshToken.Reveal()))
	return hex.EncodeToString(sum[:12])
}

// Start loads every credential's stored record, schedules refreshes and
// returns. Tokens still valid in the store are served at once.
func (b *Broker) Start(ctx context.Context) error {
	for _, name := range b.names {
		c := b.creds[name]
		rec, err := b.opts.Store.Load(ctx, c.key)
		switch {
		case errors.Is(err, store.ErrNotFound):
		case errors.Is(err, store.ErrUnknownKey):
			return fmt.Errorf("credential %q: %w", name, err)
		case err != nil:
			b.log.Error("cannot read the stored token; starting this credential from its configuration",
				"credential", name, "err", err)
		case c.seed != "" && rec.Seed != c.seed:
			b.log.Info("the configured refresh token changed; it replaces the stored one", "credential", name)
			c.gen = rec.Generation // the next write must still pass the fence
		default:
			c.install(rec)
		}
		if c.tok.RefreshToken.IsZero() {
			c.tok.RefreshToken = c.InitialRefreshToken
		}
	}
	b.ctx, b.cancel = context.WithCancel(context.WithoutCancel(ctx))
	now := time.Now()
	for _, name := range b.names {
		c := b.creds[name]
		c.nextRefresh = b.refreshPoint(&c.tok, now)
		b.sched.schedule(c, c.nextRefresh)
	}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		if err := b.opts.Store.Watch(b.ctx, b.peerChanged); err != nil && b.ctx.Err() == nil {
			b.log.Error("store watch ended", "err", err)
		}
	}()
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		b.sched.run(b.ctx, func(c *cred) { b.startRefresh(c) })
	}()
	return nil
}

// Shutdown starts no more refreshes and lets those in flight finish until
// ctx ends, then closes the broker. A refresh cut short may have spent a
// rotating refresh token whose successor is in the provider's answer, so a
// stop gives them what time it has.
func (b *Broker) Shutdown(ctx context.Context) error {
	b.draining.Store(true)
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for b.refreshing() {
		select {
		case <-t.C:
		case <-ctx.Done():
			return b.Close()
		}
	}
	return b.Close()
}

// refreshing reports whether a refresh worker is running.
func (b *Broker) refreshing() bool {
	for _, q := range b.queues {
		q.mu.Lock()
		n := q.running
		q.mu.Unlock()
		if n > 0 {
			return true
		}
	}
	return false
}

// Close stops refreshing and waits for refreshes in flight to end.
func (b *Broker) Close() error {
	if b.cancel != nil {
		b.cancel()
	}
	b.wg.Wait()
	for _, ep := range b.eps {
		b.dropProbeLease(ep)
	}
	return nil
}

// install makes a stored rec the credential's current token and hands it
// out. Callers hold c.mu, or own c exclusively (Start).
func (c *cred) install(rec store.Record) {
	c.hold(rec)
	c.publish()
}

// hold keeps rec in memory without handing it out.
func (c *cred) hold(rec store.Record) {
	c.gen = rec.Generation
	c.tok = rec.Token
	c.lastRefresh = rec.UpdatedAt
}

// publish hands out c.tok from now on.
func (c *cred) publish() {
	if c.tok.AccessToken.IsZero() {
		return
	}
	p := &published{Handout{AccessToken: c.tok.AccessToken, Expiry: c.tok.Expiry}, minTTL(&c.tok)}
	c.cur.Store(p)
	c.state = StateOK
	if c.onPublish != nil {
		c.onPublish(c.Name, p.Handout, p.Expiry.Add(-p.minTTL))
	}
}

// published is a token as handouts read it: what they hand out and the
// least life it must have left, and no more (at 5,000 credentials a copy of
// the whole Token is a third of a megabyte).
type published struct {
	Handout
	minTTL time.Duration
}

// refreshPoint is when c's token should next be refreshed: at RefreshAt of
// its lifetime less jitter, and before its refresh token dies too.
func (b *Broker) refreshPoint(t *sources.Token, now time.Time) time.Time {
	if t.AccessToken.IsZero() {
		return now
	}
	frac := b.opts.RefreshAt - rand.Float64()*b.opts.Jitter
	at := t.IssuedAt.Add(time.Duration(float64(t.Lifetime()) * frac))
	if !t.RefreshExpiry.IsZero() {
		rl := t.RefreshExpiry.Sub(t.IssuedAt)
		at = minTime(at, t.IssuedAt.Add(time.Duration(float64(rl)*frac)))
	}
	return maxTime(at, now.Add(minInterval))
}

// minTTL is the least life a handed-out token has left: min(60 s, 10%),
// and at least a second, so that expires_in is never 0.
func minTTL(t *sources.Token) time.Duration {
	return max(min(time.Minute, t.Lifetime()/10), time.Second)
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// backoff is full jitter over a capped exponential ramp, and never shorter
// than what the provider asked for with Retry-After.
func (b *Broker) backoff(failures int, err error) time.Duration {
	ceil := b.opts.BackoffMax
	if failures < 30 {
		ceil = min(ceil, b.opts.BackoffBase<<failures)
	}
	d := time.Duration(rand.Int64N(int64(ceil) + 1))
	var pe *sources.ProviderError
	if errors.As(err, &pe) && pe.RetryAfter > d {
		d = pe.RetryAfter
	}
	return max(d, minInterval)
}
