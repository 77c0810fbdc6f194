package broker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tokenbroker/tokenbroker/sources"
)

// Handout is an access token as handed to a caller.
type Handout struct {
	AccessToken sources.Secret
	Expiry      time.Time
}

// UnavailableError says why a credential has no valid token to hand out.
type UnavailableError struct {
	Name    string
	State   State
	Cause   error     // the last refresh error, if any
	RetryAt time.Time // next attempt, zero when none is planned
}

func (e *UnavailableError) Error() string {
	msg := fmt.Sprintf("credential %q has no valid token", e.Name)
	switch {
	case e.Cause != nil:
		msg += ": " + e.Cause.Error()
	case e.State == StatePending:
		msg += ": the first token request has not completed"
	}
	return msg
}

// Advice says what the caller or operator should do.
func (e *UnavailableError) Advice() string {
	var outage *OutageError
	switch {
	case e.State == StateReauthorize || e.State == StateRejected:
		return sources.Advice(e.Cause)
	case errors.As(e.Cause, &outage):
		return outage.Advice()
	case !e.RetryAt.IsZero():
		return "the broker retries at " + e.RetryAt.UTC().Format(time.RFC3339) + "; ask again later"
	default:
		return "ask again shortly"
	}
}

func (e *UnavailableError) Unwrap() error { return e.Cause }

// Token hands out name's current access token, which has at least
// min(60 s, 10% of its lifetime), and at least 1 s, left. On the normal path it reads memory
// only. Without a valid token it waits, at most Options.HandoutWait, for the
// one refresh in flight (starting it if the credential is not failing), and
// otherwise returns an *UnavailableError.
func (b *Broker) Token(ctx context.Context, name string) (Handout, error) {
	c := b.creds[name]
	if c == nil {
		return Handout{}, fmt.Errorf("%w %q", ErrUnknownCredential, name)
	}
	if h, ok := c.handout(time.Now()); ok {
		return h, nil
	}
	if done := b.kick(c); done != nil {
		t := time.NewTimer(b.opts.HandoutWait)
		defer t.Stop()
		select {
		case <-done:
		case <-t.C:
		case <-ctx.Done():
		}
		if h, ok := c.handout(time.Now()); ok {
			return h, nil
		}
	}
	outage := c.ep.outage()
	c.mu.Lock()
	defer c.mu.Unlock()
	if outage != nil && c.state != StateReauthorize && c.state != StateRejected {
		return Handout{}, &UnavailableError{Name: name, State: c.state, Cause: outage, RetryAt: outage.NextProbe}
	}
	return Handout{}, &UnavailableError{Name: name, State: c.state, Cause: c.lastErr, RetryAt: c.nextRefresh}
}

func (c *cred) handout(now time.Time) (Handout, bool) {
	p := c.cur.Load()
	if p == nil || p.Expiry.Sub(now) <= p.minTTL {
		return Handout{}, false
	}
	return p.Handout, true
}

// kick returns the channel of the refresh a handout may wait for: the one in
// flight, or a new one unless the credential is failing (a flood of callers
// must not hammer a provider that is in backoff, refusing us, asked us to
// wait, or down).
func (b *Broker) kick(c *cred) <-chan struct{} {
	c.mu.Lock()
	inflight, state, retryAt, failures := c.inflight, c.state, c.nextRefresh, c.failures
	c.mu.Unlock()
	now := time.Now()
	switch {
	case inflight != nil:
		return inflight
	case b.ctx == nil || b.ctx.Err() != nil:
		return nil
	case state == StateReauthorize || state == StateRejected:
		return nil
	case (state == StateRetrying || failures > 0) && now.Before(retryAt):
		// In backoff; also while the state still says ok because the
		// token, in its last margin, has not expired yet.
		return nil
	case c.heldBack(now) != nil:
		return nil // Retry-After, or the endpoint is down: the probe decides
	}
	return b.startRefresh(c)
}

// Refresh forces one refresh of name now and waits for it.
func (b *Broker) Refresh(ctx context.Context, name string) error {
	c := b.creds[name]
	if c == nil {
		return fmt.Errorf("%w %q", ErrUnknownCredential, name)
	}
	if b.ctx == nil {
		return errors.New("broker is not running")
	}
	if b.draining.Load() {
		return fmt.Errorf("refresh %q: the broker is stopping; ask another broker or retry after the restart", name)
	}
	if err := c.heldBack(time.Now()); err != nil {
		return fmt.Errorf("refresh %q: %w", name, err) // see DeferredError
	}
	c.mu.Lock()
	if c.state == StateReauthorize || c.state == StateRejected {
		c.state = StateRetrying // the operator asks for another try
	}
	c.force = true
	joined := c.inflight != nil
	c.mu.Unlock()
	for {
		select {
		case <-b.startRefresh(c):
		case <-ctx.Done():
			return ctx.Err()
		}
		// A refresh already past its provider call when we asked leaves
		// force set: it may carry a token issued before the request, so
		// make one call of our own.
		c.mu.Lock()
		again := joined && c.force
		c.mu.Unlock()
		if !again {
			break
		}
		joined = false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.lastErr != nil {
		return fmt.Errorf("refresh %q: %w", name, c.lastErr)
	}
	return nil
}

// Status is a credential's condition, without any secret. api encodes it
// for the wire; broker knows nothing of that format.
type Status struct {
	Name        string
	Provider    string
	Grant       string
	State       State
	ExpiresAt   time.Time // zero: no token yet
	LastRefresh time.Time // zero: never refreshed
	NextRefresh time.Time // zero: none planned
	Failures    int       // failed refreshes in a row
	LastError   string
	Action      string // what an operator should do
	Generation  uint64
}

// Names lists the credentials, sorted.
func (b *Broker) Names() []string { return b.names }

// Status reports every credential's condition, sorted by name.
func (b *Broker) Status() []Status {
	out := make([]Status, 0, len(b.names))
	for _, name := range b.names {
		out = append(out, b.creds[name].status())
	}
	return out
}

func (c *cred) status() Status {
	outage := c.ep.outage()
	c.mu.Lock()
	defer c.mu.Unlock()
	s := Status{
		Name: c.Name, Provider: c.Provider, Grant: string(c.Source.Grant()), State: c.state,
		ExpiresAt: c.tok.Expiry, LastRefresh: c.lastRefresh, NextRefresh: c.nextRefresh,
		Failures: c.failures, Generation: c.gen,
	}
	if c.lastErr != nil {
		s.LastError = c.lastErr.Error()
		s.Action = sources.Advice(c.lastErr)
	}
	if outage != nil && s.NextRefresh.Before(outage.NextProbe) && c.state != StateReauthorize && c.state != StateRejected {
		// Nothing goes to the provider before its next probe.
		s.NextRefresh, s.Action = outage.NextProbe, outage.Advice()
		if !c.tok.Valid(time.Now(), minTTL(&c.tok)) {
			s.State = StateRetrying // waiting for the probe, not refreshing itself
		}
	}
	return s
}
