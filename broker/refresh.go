package broker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tokenbroker/tokenbroker/broker/store"
	"github.com/tokenbroker/tokenbroker/internal/crashpoint"
	"github.com/tokenbroker/tokenbroker/sources"
)

// errAdopted reports that a refresh found a newer token in the store and
// took it instead of calling the provider.
var errAdopted = errors.New("adopted a newer stored token")

// errStopping ends a refresh that reached its provider call after Shutdown
// began.
var errStopping = errors.New("the broker is stopping; a peer or the next start refreshes it")

// startRefresh queues c's refresh unless one is in flight, and returns the
// channel closed when it ends. It never blocks.
func (b *Broker) startRefresh(c *cred) <-chan struct{} {
	c.mu.Lock()
	if c.inflight != nil {
		defer c.mu.Unlock()
		return c.inflight
	}
	done := make(chan struct{})
	c.inflight = done
	c.mu.Unlock()
	q := b.queues[c.Provider]
	if q.push(c) {
		b.wg.Add(1)
		go b.work(q)
	}
	return done
}

// work runs q's refreshes until none is waiting.
func (b *Broker) work(q *refreshQueue) {
	defer b.wg.Done()
	for c := q.pop(); c != nil; c = q.pop() {
		b.runRefresh(b.ctx, c)
		c.mu.Lock()
		done := c.inflight
		c.inflight = nil
		c.mu.Unlock()
		close(done)
	}
}

// refreshQueue runs one provider's refreshes, at most max at once, in the
// order they were asked for. A waiting refresh is a slice entry, not a
// goroutine: a restart queues every credential at once, and 10k parked
// goroutines would cost their stacks and ~470 B of heap each for good (the
// runtime never frees a goroutine's descriptor).
type refreshQueue struct {
	mu      sync.Mutex
	waiting []*cred
	running int
	max     int
}

// push queues c and reports whether the caller must start a worker.
func (q *refreshQueue) push(c *cred) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.waiting = append(q.waiting, c)
	if q.running < q.max {
		q.running++
		return true
	}
	return false
}

// pop takes the next waiting credential, or nil when none is left, and
// then the calling worker must stop.
func (q *refreshQueue) pop() *cred {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.waiting) == 0 {
		q.waiting = nil
		q.running--
		return nil
	}
	c := q.waiting[0]
	q.waiting[0] = nil
	q.waiting = q.waiting[1:]
	return c
}

// runRefresh refreshes c once, records the outcome and schedules the next
// attempt.
func (b *Broker) runRefresh(ctx context.Context, c *cred) {
	if ctx.Err() != nil || b.draining.Load() {
		return // shutting down: release the waiters, call no one
	}
	if !b.admit(ctx, c) {
		return // Retry-After, or the endpoint fails and another credential probes
	}
	start := time.Now()
	err := b.refresh(ctx, c)
	adopted := errors.Is(err, errAdopted)
	if adopted {
		err = nil
	}
	if errors.Is(err, errStopping) {
		c.mu.Lock()
		c.lastErr = err // for a forced refresh waiting on this one
		c.mu.Unlock()
		return
	}
	if ctx.Err() != nil {
		return // shutting down: nothing to schedule
	}
	now := time.Now()
	down := endpointFailure(err)
	var next time.Time
	if down {
		next = b.endpointFailed(c, err, now)
	} else if since, failing := c.ep.failingSince(); failing && answered(err, c, since) {
		b.endpointAnswered(c)
	}
	result := ResultOK
	c.mu.Lock()
	c.lastErr = err
	switch {
	case err == nil:
		c.failures = 0
		c.state = StateOK
		next = b.refreshPoint(&c.tok, now)
		if adopted {
			result = ResultAdopted
		}
	case errors.Is(err, store.ErrLockHeld):
		// A peer is refreshing: not a failure, look again shortly.
		next = now.Add(b.opts.PeerWait)
		result = ResultPeer
	case errors.Is(err, sources.ErrReauthorize):
		c.state = StateReauthorize
		result = ResultReauthorize
	case errors.Is(err, sources.ErrRejected):
		c.state = StateRejected
		result = ResultRejected
	default:
		result = ResultTransient
		c.failures++
		if c.state != StateOK || !c.tok.Valid(now, 0) {
			c.state = StateRetrying
		}
		if down {
			break // the endpoint's probe decides; next is set above
		}
		next = now.Add(b.backoff(c.failures, err))
		// Never back off past the token's last margin: one more attempt
		// must come while the token in hand still serves.
		if last := c.tok.Expiry.Add(-2 * minTTL(&c.tok)); c.tok.Valid(now, 0) && last.After(now) && next.After(last) {
			next = last
		}
	}
	// The provider's Retry-After is a floor under every rule above.
	ra := retryAfter(err)
	if ra > 0 {
		c.notBefore = now.Add(ra)
		if !next.IsZero() {
			next = maxTime(next, c.notBefore)
		}
	}
	if !next.IsZero() || !down {
		c.nextRefresh = next // a parked credential keeps its overdue time
	}
	state, failures, exp := c.state, c.failures, c.tok.Expiry
	c.mu.Unlock()
	if ra > 0 {
		b.log.Warn("the provider asked to wait before the next request (Retry-After)", "credential", c.Name,
			"seconds", int(ra.Round(time.Second)/time.Second), "until", now.Add(ra).UTC().Format(time.RFC3339))
	}
	if next.IsZero() && !down {
		b.passProbe(c) // c needs an operator: another credential probes
	}
	b.sched.schedule(c, next)
	b.opts.Observer.Refreshed(c.Name, c.Provider, result, now.Sub(start))

	switch {
	case adopted:
		b.log.Info("token adopted from the store (another broker refreshed it)", "credential", c.Name,
			"expires_at", exp.UTC().Format(time.RFC3339), "next_refresh", next.UTC().Format(time.RFC3339))
	case err == nil:
		b.log.Info("token refreshed", "credential", c.Name, "duration", now.Sub(start).Round(time.Millisecond),
			"expires_at", exp.UTC().Format(time.RFC3339), "next_refresh", next.UTC().Format(time.RFC3339))
	case down && next.IsZero():
		b.log.Warn("refresh failed; waiting for the provider endpoint to answer a probe", "credential", c.Name,
			"failures", failures, "err", err)
	case next.IsZero() && errors.Is(err, sources.ErrNoRefreshToken):
		// Waiting for authorize is a state, not a fault: said once, at WARN.
		b.log.Warn("no refresh token yet; waiting for authorization", "credential", c.Name, "action", sources.Advice(err))
	case next.IsZero():
		b.log.Error("refresh refused; not retrying", "credential", c.Name, "state", state, "err", err,
			"action", sources.Advice(err))
	default:
		b.log.Warn("refresh failed; will retry", "credential", c.Name, "failures", failures, "err", err,
			"retry_at", next.UTC().Format(time.RFC3339))
	}
}

// refresh obtains a new token for c from its source, under the store's lock,
// and writes it durably before anyone is handed the new access token.
func (b *Broker) refresh(ctx context.Context, c *cred) error {
	c.mu.Lock()
	spends := c.Source.Spends(c.tok)
	c.mu.Unlock()
	mode := store.Mode(0)
	if spends {
		// The record a fleet store put back over a lost shared copy may be
		// older than a peer's, whose refresh token we would otherwise spend
		// a second time: the claim settles first.
		mode = store.Spend
	}
	lockStart := time.Now()
	claim, err := b.opts.Store.Acquire(ctx, c.key, mode)
	b.opts.Observer.LockWaited(c.Name, time.Since(lockStart), lockOutcome(err))
	switch {
	case errors.Is(err, store.ErrLockLost):
		return err
	case errors.Is(err, store.ErrLockHeld):
		return b.awaitPeer(ctx, c)
	case err != nil && spends:
		// A refresh token is never spent without the lock: every broker of
		// the fleet would reach that decision at once, and a provider that
		// detects reuse then revokes the grant for all of them, which needs
		// an operator to authorize again. Waiting for Redis costs at most an
		// outage of this credential that ends by itself. Grants without a
		// refresh token share no secret state, so they may go on.
		return fmt.Errorf("taking the refresh lock: %w (a refresh token is never spent without it; the token in hand is served until it expires)", err)
	case err != nil:
		b.log.Warn("refreshing without the fleet lock", "credential", c.Name, "err", err)
		if claim, err = b.opts.Store.Acquire(ctx, c.key, store.NoLock); err != nil {
			return err
		}
	}
	defer releaseLock(ctx, claim)

	// Someone may have refreshed while we waited for the lock.
	cur, err := claim.Current()
	adopted, err := b.adopt(c, cur, err)
	c.mu.Lock()
	force := c.force
	c.force = false
	prev, gen, unsaved := c.tok, c.gen, c.unsaved
	adopted = adopted || c.upToDate(time.Now())
	c.mu.Unlock()
	if err != nil {
		return err
	}
	if adopted && !force {
		return errAdopted
	}
	if unsaved {
		// A token we hold was never written: write it before spending its
		// refresh token, so a crash now cannot lose it.
		if err := b.save(ctx, c, claim, store.Record{Generation: gen, Token: prev, Seed: c.seed, UpdatedAt: time.Now()}); err != nil {
			return err
		}
		if !force && prev.Valid(time.Now(), minTTL(&prev)) {
			return nil // that token, saved at last, is this attempt's result
		}
	}

	if b.draining.Load() {
		// Shutdown's grace could end after the provider acted and before
		// its answer is saved, losing a rotated refresh token: no request
		// starts once the stop has begun.
		return errStopping
	}
	b.step(crashpoint.BeforeRequest)
	c.mu.Lock()
	lostBefore := c.answerLost
	c.mu.Unlock()
	// When the provider may have spent the refresh token, a source that
	// can start over without it (a password) does, rather than have the
	// provider revoke the grant whose tokens the fleet hands out; at once,
	// under this lock, since a peer that took the lock next would not know.
	startOver := func() bool {
		if !c.Source.Spends(prev) || c.Source.Spends(sources.Token{}) {
			return false
		}
		b.log.Info("starting a new grant rather than spending a refresh token the provider may have spent", "credential", c.Name)
		prev = sources.Token{}
		return true
	}
	if lostBefore {
		startOver()
	}
	tok, err := b.request(ctx, c, prev)
	lost := errors.Is(err, sources.ErrAnswerLost)
	if lost && startOver() {
		tok, err = b.request(ctx, c, prev)
	}
	if lostBefore && errors.Is(err, sources.ErrReauthorize) {
		err = fmt.Errorf("%w (the answer to the previous refresh was lost after it was sent: the provider had likely rotated the refresh token already, and took this attempt for a reuse)", err)
	}
	c.mu.Lock()
	c.answerLost = err != nil && (lost || errors.Is(err, sources.ErrAnswerLost))
	c.mu.Unlock()
	if err != nil {
		return &requestError{err}
	}
	b.step(crashpoint.AfterAnswer)
	rec := store.Record{Generation: gen + 1, Token: tok, Seed: c.seed, UpdatedAt: time.Now()}
	c.mu.Lock()
	// Held in memory at once, so this process cannot lose a rotated refresh
	// token; handed out only once it is durable.
	c.hold(rec)
	c.unsaved = true
	c.mu.Unlock()
	return b.save(ctx, c, claim, rec)
}

func lockOutcome(err error) string {
	switch {
	case err == nil || errors.Is(err, store.ErrLockLost): // taken, then lost while settling
		return "acquired"
	case errors.Is(err, store.ErrLockHeld):
		return "held"
	}
	return "error"
}

// errNotSent ends a request that could not be sent within RequestTimeout.
var errNotSent = errors.New("the request was not sent within the request timeout")

// request asks c's source for a token. A request that spends nothing is
// bounded by RequestTimeout. One that spends a refresh token is bounded by
// it only until it is sent: from then on the provider may act on it
// whatever we do, and its answer holds the only copy of the successor, so
// it is awaited up to AnswerTimeout, under the lock, and never sent again
// unless its answer is certainly lost.
func (b *Broker) request(ctx context.Context, c *cred, prev sources.Token) (sources.Token, error) {
	if !c.Source.Spends(prev) {
		rctx, cancel := context.WithTimeout(ctx, b.opts.RequestTimeout)
		defer cancel()
		return c.Source.Token(rctx, prev)
	}
	rctx, cancel := context.WithTimeout(ctx, b.opts.AnswerTimeout)
	defer cancel()
	sctx, unsent := context.WithCancelCause(rctx)
	defer unsent(nil)
	var written atomic.Bool
	sctx = sources.OnWritten(sctx, func() { written.Store(true) })
	start := time.Now()
	slow := time.AfterFunc(b.opts.RequestTimeout, func() {
		if !written.Load() {
			unsent(errNotSent)
			return
		}
		b.opts.Observer.RequestSlow(c.Provider)
		b.log.Warn("the provider has not answered a sent refresh yet; awaiting its answer, not sending it again (the lock is held, the current token is still handed out)",
			"credential", c.Name, "waited", b.opts.RequestTimeout, "answer_timeout", b.opts.AnswerTimeout)
	})
	tok, err := c.Source.Token(sctx, prev)
	slowed := !slow.Stop()
	switch {
	case err == nil:
		if slowed {
			b.log.Info("the slow refresh was answered", "credential", c.Name, "after", time.Since(start).Round(time.Millisecond))
		}
		return tok, nil
	case errors.Is(context.Cause(sctx), errNotSent):
		return sources.Token{}, fmt.Errorf("%w (%s, connecting and sending included): %w", errNotSent, b.opts.RequestTimeout, err)
	case !written.Load():
		return sources.Token{}, err
	case ctx.Err() != nil:
		b.log.Warn("the stop cut short a sent refresh after its grace: the provider may have spent the refresh token, and its successor is lost with the answer; if the provider detects reuse, the credential must be authorized again",
			"credential", c.Name, "waited", time.Since(start).Round(time.Millisecond))
		return sources.Token{}, err
	case rctx.Err() != nil:
		b.opts.Observer.AnswerLost(c.Provider)
		return sources.Token{}, fmt.Errorf("%w: none within the answer timeout (%s), so the provider may have spent the refresh token and the next attempt may be refused as a reuse (%w)", sources.ErrAnswerLost, b.opts.AnswerTimeout, err)
	case errors.Is(err, sources.ErrAnswerLost):
		b.opts.Observer.AnswerLost(c.Provider)
		b.log.Warn("the connection closed after a refresh was sent, with no answer: the provider may have spent the refresh token; trying again, which a provider that detects reuse may refuse",
			"credential", c.Name)
	}
	return sources.Token{}, err
}

// save commits rec under claim, clears c.unsaved and hands rec out. When a
// newer record is stored, that record wins and is adopted.
func (b *Broker) save(ctx context.Context, c *cred, claim store.Claim, rec store.Record) error {
	err := claim.Commit(ctx, rec)
	if errors.Is(err, store.ErrStale) {
		stored, lerr := b.opts.Store.Load(ctx, c.key)
		if lerr != nil {
			return fmt.Errorf("reading the stored token after a refused save: %w", lerr)
		}
		// Our own record, from an attempt that landed though it reported
		// a failure: it is saved, hand it out.
		ours := stored.Generation == rec.Generation && stored.Token.AccessToken.Equal(rec.Token.AccessToken)
		if !ours {
			b.log.Warn("a newer token was stored meanwhile; keeping the newer one", "credential", c.Name)
			c.mu.Lock()
			defer c.mu.Unlock()
			if c.seed == "" || stored.Seed == c.seed {
				c.install(stored)
			}
			c.unsaved = false
			return errAdopted
		}
		err = nil
	}
	if err != nil {
		return fmt.Errorf("saving the new token: %w (it is kept in memory and saved on the next attempt)", err)
	}
	b.step(crashpoint.AfterSave)
	c.mu.Lock()
	if c.gen == rec.Generation {
		c.unsaved = false
		c.publish()
	}
	c.mu.Unlock()
	return nil
}

// adoptStored takes the stored record when it is newer than what c holds,
// and reports whether it did and that token needs no refresh yet: then
// another broker refreshed meanwhile and calling the provider again would
// waste a refresh (or spend a rotated refresh token twice).
func (b *Broker) adoptStored(ctx context.Context, c *cred) (adopted bool, err error) {
	rec, err := b.opts.Store.Load(ctx, c.key)
	return b.adopt(c, rec, err)
}

// adopt is adoptStored of a record already read.
func (b *Broker) adopt(c *cred, rec store.Record, err error) (adopted bool, _ error) {
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	}
	if errors.Is(err, store.ErrCorrupt) {
		b.log.Warn("the stored token is unreadable; the next refresh replaces it", "credential", c.Name, "err", err)
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("reading the stored token: %w", err)
	}
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if rec.Generation <= c.gen || (c.seed != "" && rec.Seed != c.seed) {
		return false, nil
	}
	c.install(rec)
	c.unsaved = false
	return c.tok.Valid(now, minTTL(&c.tok)) && now.Before(c.tok.IssuedAt.Add(time.Duration(float64(c.tok.Lifetime())*b.opts.RefreshAt))), nil
}

// awaitPeer waits for the broker holding the lock to publish its result,
// then adopts it. It never calls the provider.
func (b *Broker) awaitPeer(ctx context.Context, c *cred) error {
	c.mu.Lock()
	if c.changed == nil { // made on first wait: most credentials never wait
		c.changed = make(chan struct{})
	}
	changed := c.changed
	c.mu.Unlock()
	t := time.NewTimer(b.opts.PeerWait)
	defer t.Stop()
	select {
	case <-changed:
	case <-t.C:
	case <-ctx.Done():
		return ctx.Err()
	}
	adopted, err := b.adoptStored(ctx, c)
	if err != nil {
		return err
	}
	c.mu.Lock()
	adopted = adopted || c.upToDate(time.Now())
	c.mu.Unlock()
	if !adopted {
		return store.ErrLockHeld
	}
	return errAdopted
}

// upToDate reports whether c's token needs no refresh yet: it is handed
// out, keeps its margin, and its refresh point is ahead. A peer's token
// adopted through the store's event (peerChangedCred) moves that point, so
// a refresh decided just before that token arrived calls no provider.
// c.mu must be held.
func (c *cred) upToDate(now time.Time) bool {
	return !c.unsaved && c.tok.Valid(now, minTTL(&c.tok)) && now.Before(c.nextRefresh)
}

// releaseLock gives l back, even after ctx ended.
func releaseLock(ctx context.Context, l store.Lock) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	_ = l.Release(rctx)
}

// peerChanged is called by the store's Watch when another broker wrote key,
// or with "" when every credential must be read again.
func (b *Broker) peerChanged(key string) {
	if key == "" {
		for _, c := range b.creds {
			b.peerChangedCred(c)
		}
		return
	}
	if c := b.byKey[key]; c != nil {
		b.peerChangedCred(c)
	}
}

func (b *Broker) peerChangedCred(c *cred) {
	c.mu.Lock()
	if c.changed != nil {
		close(c.changed)
		c.changed = nil
	}
	c.mu.Unlock()
	if adopted, err := b.adoptStored(b.ctx, c); err == nil && adopted {
		c.mu.Lock()
		next := b.refreshPoint(&c.tok, time.Now())
		c.nextRefresh = next
		c.mu.Unlock()
		b.sched.schedule(c, next)
		// A peer's token issued during an outage: the endpoint is back.
		// An older one leaves c nothing to do at the next probe: another
		// credential probes.
		if since, failing := c.ep.failingSince(); failing && answered(nil, c, since) {
			b.endpointAnswered(c)
		} else if failing {
			b.passProbe(c)
		}
	}
}
