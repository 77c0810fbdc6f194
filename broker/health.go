package broker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/tokenbroker/tokenbroker/broker/store"
	"github.com/tokenbroker/tokenbroker/sources"
)

// maxRetryAfter caps the wait a provider can ask for: a hostile or broken
// Retry-After must not park a credential for days.
const maxRetryAfter = time.Hour

// endpoint is the health of one provider token endpoint, shared by every
// credential that sends to it. While it fails, one credential's refresh at
// a time (the probe) goes to it, every ProbeInterval and never before the
// provider's Retry-After; the other credentials due a refresh wait, and all
// of them refresh the moment a probe gets an answer.
type endpoint struct {
	provider string
	lockKey  string // the fleet's probe lock, so a fleet probes as one broker

	mu      sync.Mutex
	failing bool
	since   time.Time
	cause   error
	probeAt time.Time // the next probe
	prober  *cred     // whose refresh is the probe
	waiting []*cred   // due a refresh, waiting for a probe to succeed

	leaseMu sync.Mutex
	lease   store.Lock // the fleet probe lock, held while this broker probes
}

func newEndpoint(key, provider string) *endpoint {
	sum := sha256.Sum256([]byte(key))
	return &endpoint{provider: provider, lockKey: "probe." + hex.EncodeToString(sum[:8])}
}

// OutageError says that a credential's provider endpoint is failing for
// every credential behind it, and when the broker probes it next.
type OutageError struct {
	Provider  string
	Since     time.Time
	NextProbe time.Time
	Cause     error // the last failure of the endpoint
}

func (e *OutageError) Error() string {
	return fmt.Sprintf("provider %q has been failing since %s: %v", e.Provider, e.Since.UTC().Format(time.RFC3339), e.Cause)
}

func (e *OutageError) Unwrap() error { return e.Cause }

// Advice says what to expect and do.
func (e *OutageError) Advice() string {
	return fmt.Sprintf("the broker sends one probe to provider %q at %s and refreshes every waiting credential the moment it answers; ask again after that, and check the provider's status if it lasts",
		e.Provider, e.NextProbe.UTC().Format(time.RFC3339))
}

// outage describes ep's failure, or is nil while ep is healthy.
func (ep *endpoint) outage() *OutageError {
	ep.mu.Lock()
	defer ep.mu.Unlock()
	if !ep.failing {
		return nil
	}
	return &OutageError{Provider: ep.provider, Since: ep.since, NextProbe: ep.probeAt, Cause: ep.cause}
}

// failingSince reports whether ep is failing, and since when.
func (ep *endpoint) failingSince() (time.Time, bool) {
	ep.mu.Lock()
	defer ep.mu.Unlock()
	return ep.since, ep.failing
}

// requestError is a failure of the provider request itself, not of the
// store or lock around it: only such a failure tells about the provider.
type requestError struct{ err error }

func (e *requestError) Error() string { return e.err.Error() }
func (e *requestError) Unwrap() error { return e.err }

// endpointFailure reports whether a failed request says the endpoint, not
// the credential, is in trouble: no answer (transport error, timeout), a
// 5xx, 408 or 429, or temporarily_unavailable. Refusals of the credential
// (invalid_client, invalid_grant, ...) stay the credential's.
func endpointFailure(err error) bool {
	var re *requestError
	if !errors.As(err, &re) || errors.Is(err, sources.ErrNoRefreshToken) {
		return false
	}
	var pe *sources.ProviderError
	if errors.As(err, &pe) {
		return !pe.Permanent() && (pe.Status >= 500 || pe.Status == 429 || pe.Status == 408 || pe.Code == "temporarily_unavailable")
	}
	return !errors.Is(err, sources.ErrRejected) && !errors.Is(err, sources.ErrReauthorize)
}

// answered reports whether a refresh that ended with err heard from the
// endpoint since it began failing: a refusal of the credential, or a token
// issued after since (by this broker, or by a peer and adopted).
func answered(err error, c *cred, since time.Time) bool {
	var re *requestError
	if errors.As(err, &re) {
		return !endpointFailure(err) && !errors.Is(err, sources.ErrNoRefreshToken)
	}
	if err != nil {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.tok.IssuedAt.After(since)
}

// retryAfter is how long the provider asked to wait, capped.
func retryAfter(err error) time.Duration {
	var pe *sources.ProviderError
	if !errors.As(err, &pe) {
		return 0
	}
	return min(pe.RetryAfter, maxRetryAfter)
}

// admit decides whether c's refresh may call its provider now. When the
// provider's Retry-After or its endpoint's outage holds c back, it
// schedules c for the probe, or parks it until a probe succeeds, and
// returns false.
func (b *Broker) admit(ctx context.Context, c *cred) bool {
	now := time.Now()
	c.mu.Lock()
	notBefore := c.notBefore
	c.mu.Unlock()
	if now.Before(notBefore) {
		b.holdUntil(c, notBefore)
		return false
	}
	ep := c.ep
	ep.mu.Lock()
	if !ep.failing {
		ep.mu.Unlock()
		return true
	}
	if ep.prober == nil {
		ep.prober = c
	}
	if ep.prober != c {
		if !c.parked {
			c.parked = true
			ep.waiting = append(ep.waiting, c)
		}
		ep.mu.Unlock()
		b.park(c, now)
		return false
	}
	if now.Before(ep.probeAt) {
		at := ep.probeAt
		ep.mu.Unlock()
		b.holdUntil(c, at)
		return false
	}
	ep.probeAt = now.Add(b.opts.ProbeInterval)
	at := ep.probeAt
	ep.mu.Unlock()
	if !b.probeTurn(ctx, ep) {
		b.holdUntil(c, at) // a peer probes; it tells us through the store
		return false
	}
	b.opts.Observer.Endpoint(ep.provider, EndpointProbe)
	return true
}

// holdUntil schedules c's next attempt at at, calling no one now.
func (b *Broker) holdUntil(c *cred, at time.Time) {
	c.mu.Lock()
	c.nextRefresh = at
	c.mu.Unlock()
	b.sched.schedule(c, at)
}

// park marks c, due a refresh, as waiting for its endpoint to recover.
// It leaves nextRefresh behind now, so that c is not taken for up to date.
func (b *Broker) park(c *cred, now time.Time) {
	c.mu.Lock()
	if !c.tok.Valid(now, 0) && c.state != StateReauthorize && c.state != StateRejected {
		c.state = StateRetrying
	}
	c.mu.Unlock()
}

// probeTurn reports whether this broker may send the probe to ep. In a
// fleet one broker holds the endpoint's probe lock (through Store.Lock, so
// it is extended while held and a dead holder's lease runs out) and probes;
// the others hear of recovery through the store's record events. When the
// lock cannot be taken at all, each broker probes on its own.
func (b *Broker) probeTurn(ctx context.Context, ep *endpoint) bool {
	ep.leaseMu.Lock()
	defer ep.leaseMu.Unlock()
	if ep.lease != nil {
		if held, err := ep.lease.Held(ctx); err == nil && held {
			return true
		}
		releaseLock(ctx, ep.lease)
		ep.lease = nil
	}
	lease, err := b.opts.Store.Lock(ctx, ep.lockKey)
	switch {
	case errors.Is(err, store.ErrLockHeld):
		return false
	case err != nil:
		b.log.Warn("cannot take the fleet's probe lock; probing without it", "provider", ep.provider, "err", err)
		return true
	}
	ep.lease = lease
	return true
}

// dropProbeLease gives the fleet's probe lock back.
func (b *Broker) dropProbeLease(ep *endpoint) {
	ep.leaseMu.Lock()
	defer ep.leaseMu.Unlock()
	if ep.lease != nil {
		releaseLock(context.Background(), ep.lease)
		ep.lease = nil
	}
}

// endpointFailed records that c's request found ep failing. It returns
// when c tries next: the next probe when c probes, zero when c waits for a
// probe to succeed.
func (b *Broker) endpointFailed(c *cred, err error, now time.Time) time.Time {
	ep := c.ep
	ep.mu.Lock()
	first := !ep.failing
	if first {
		ep.failing, ep.since, ep.prober = true, now, c
		ep.probeAt = now.Add(b.opts.ProbeInterval)
	}
	ep.cause = err
	if ep.prober == nil {
		ep.prober = c
	}
	next := time.Time{}
	if ep.prober == c {
		ep.probeAt = maxTime(ep.probeAt, now.Add(retryAfter(err)))
		next = ep.probeAt
	} else if !c.parked {
		c.parked = true
		ep.waiting = append(ep.waiting, c)
	}
	probeAt := ep.probeAt
	ep.mu.Unlock()
	if first {
		b.opts.Observer.Endpoint(ep.provider, EndpointFailing)
		b.log.Warn("provider endpoint failing; one probe at a time goes to it until it answers, the other credentials wait",
			"provider", ep.provider, "credential", c.Name, "err", err, "next_probe", probeAt.UTC().Format(time.RFC3339))
	}
	return next
}

// endpointAnswered records that ep answered c: if it was failing, it has
// recovered, and every credential waiting for it refreshes now, through
// the provider's concurrency cap.
func (b *Broker) endpointAnswered(c *cred) {
	ep := c.ep
	ep.mu.Lock()
	if !ep.failing {
		ep.mu.Unlock()
		return
	}
	since := ep.since
	waiting := ep.waiting
	if ep.prober != nil && ep.prober != c {
		waiting = append(waiting, ep.prober)
	}
	ep.failing, ep.prober, ep.waiting, ep.cause = false, nil, nil, nil
	for _, w := range waiting {
		w.parked = false
	}
	ep.mu.Unlock()
	b.dropProbeLease(ep)
	b.opts.Observer.Endpoint(ep.provider, EndpointRecovered)
	b.log.Info("provider endpoint answers again; refreshing the credentials that waited", "provider", ep.provider,
		"credential", c.Name, "outage", time.Since(since).Round(time.Millisecond), "waiting", len(waiting))
	for _, w := range waiting {
		if w != c {
			b.refreshNow(w)
		}
	}
}

// refreshNow starts w's refresh, or, when w is still in the run that just
// parked it, starts one as soon as that run ends: startRefresh alone would
// join that run, and a parked credential is not scheduled.
func (b *Broker) refreshNow(w *cred) {
	w.mu.Lock()
	inflight := w.inflight
	w.mu.Unlock()
	if inflight == nil {
		b.startRefresh(w)
		return
	}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		select {
		case <-inflight:
			b.startRefresh(w)
		case <-b.ctx.Done():
		}
	}()
}

// passProbe hands the probe on when c, the prober, will not be refreshed
// again by itself (it needs an operator), so the endpoint keeps a prober.
func (b *Broker) passProbe(c *cred) {
	ep := c.ep
	ep.mu.Lock()
	if ep.prober != c {
		ep.mu.Unlock()
		return
	}
	ep.prober = nil
	var next *cred
	if len(ep.waiting) > 0 {
		next, ep.waiting = ep.waiting[0], ep.waiting[1:]
		next.parked = false
		ep.prober = next
	}
	at := ep.probeAt
	ep.mu.Unlock()
	if next != nil {
		b.holdUntil(next, at)
	}
}

// DeferredError says why a credential must not call its provider before
// Until: the provider asked to wait (Retry-After), or its endpoint fails
// and only its probe goes out. A forced refresh is refused with it, not
// waited for: the wait can be an hour, longer than a caller holds a request
// open, and the broker refreshes by itself then.
type DeferredError struct {
	Until time.Time
	Cause error // the outage (*OutageError), or nil for a Retry-After
}

func (e *DeferredError) Error() string {
	if e.Cause != nil {
		return e.Cause.Error()
	}
	return "the provider asked for no request before " + e.Until.UTC().Format(time.RFC3339) + " (Retry-After)"
}

func (e *DeferredError) Unwrap() error { return e.Cause }

// Advice says what to expect and do.
func (e *DeferredError) Advice() string {
	var o *OutageError
	if errors.As(e.Cause, &o) {
		return o.Advice()
	}
	return "the broker refreshes it then by itself; a request sooner would only prolong the wait"
}

// heldBack says why c must not call its provider now, or is nil.
func (c *cred) heldBack(now time.Time) *DeferredError {
	c.mu.Lock()
	notBefore := c.notBefore
	c.mu.Unlock()
	if now.Before(notBefore) {
		return &DeferredError{Until: notBefore}
	}
	if o := c.ep.outage(); o != nil {
		return &DeferredError{Until: o.NextProbe, Cause: o}
	}
	return nil
}
