package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/oauth2"
)

// TokenSourceOptions configure Client.TokenSource; zero values take
// defaults.
type TokenSourceOptions struct {
	// MinTTL is the least life a cached token must have left to be handed
	// out without asking the broker. 0 means the broker's own rule:
	// min(60 s, 10% of the life the token had left when fetched). A larger
	// MinTTL is capped at half that life, so that a token is always cached
	// for a while even when the broker has no fresher one yet.
	MinTTL time.Duration
	// RetryFor bounds how long a fetch keeps asking while the broker is
	// unreachable (restarting) or answers 503 token_unavailable, backing off
	// from 50 ms to 1 s; a context deadline bounds it too. 0 means
	// DefaultRetryFor; a negative value means a single attempt.
	RetryFor time.Duration
}

// TokenSource hands out one credential's access token, cached in the
// process: while the token has more than MinTTL left, Token returns it
// without asking the broker, for the cost of a clock read and an atomic
// load, without allocating.
// Then the first caller asks the broker again, while the others keep the
// cached token until it expires, or wait for that one request once it has.
//
// It implements oauth2.TokenSource and is safe for concurrent use. Get one
// from Client.TokenSource.
type TokenSource struct {
	c        *Client
	name     string
	minTTL   time.Duration // 0: the broker's rule
	retryFor time.Duration // <= 0: a single attempt

	cur atomic.Pointer[cached] // nil until the first fetch

	mu       sync.Mutex
	fetching *flight // the fetch in progress, if any
	renewing *flight // the last renewal after a 401 (see renew)
}

// cached is an immutable cache entry.
type cached struct {
	tok     *oauth2.Token // shared with every caller: never modified
	staleAt time.Time     // ask the broker again from then on
	expiry  time.Time     // tok.Expiry
}

// flight is one request to the broker that several callers share.
type flight struct {
	done   chan struct{} // closed when tok and err are set
	tok    *oauth2.Token
	err    error
	failed string    // renewals: the access token an API refused
	end    time.Time // renewals: when it ended; guarded by TokenSource.mu
}

// renewReuse is how long the outcome of a renewal after a 401 answers
// further 401s with the same token, so that requests which were in flight
// together do not ask for one refresh each.
const renewReuse = time.Second

// TokenSource returns a source of name's access token, cached in the
// process (see TokenSource). With nil opts it returns the one source that
// the client keeps for name, which Transport and HTTPClient share; with
// non-nil opts, a new source with its own cache.
func (c *Client) TokenSource(name string, opts *TokenSourceOptions) *TokenSource {
	if opts != nil {
		return newTokenSource(c, name, *opts)
	}
	if s, ok := c.sources.Load(name); ok {
		return s.(*TokenSource)
	}
	s, _ := c.sources.LoadOrStore(name, newTokenSource(c, name, TokenSourceOptions{}))
	return s.(*TokenSource)
}

func newTokenSource(c *Client, name string, o TokenSourceOptions) *TokenSource {
	s := &TokenSource{c: c, name: name, minTTL: max(o.MinTTL, 0), retryFor: o.RetryFor}
	if s.retryFor == 0 {
		s.retryFor = DefaultRetryFor
	}
	return s
}

// Token returns the credential's access token; see TokenContext.
func (s *TokenSource) Token() (*oauth2.Token, error) {
	return s.TokenContext(context.Background())
}

// TokenContext returns the credential's access token, from the cache while
// it has more than MinTTL left, else from the broker; ctx bounds the wait
// for the broker.
//
// The token is shared with every other caller, as oauth2.ReuseTokenSource
// shares its tokens: do not modify it. Errors never reveal a token: when
// the broker refuses, the error is an *Error naming the credential (404
// unknown_credential and other 4xx answers are returned at once); when it
// stays unreachable for RetryFor, the error matches ErrUnreachable and
// names the socket.
func (s *TokenSource) TokenContext(ctx context.Context) (*oauth2.Token, error) {
	now := time.Now()
	if e := s.cur.Load(); e != nil && now.Before(e.staleAt) {
		return e.tok, nil
	}
	return s.slow(ctx, now)
}

// slow handles a missing or stale cache entry: one caller fetches, the
// others use the cached token while it is valid, or wait for the fetch.
func (s *TokenSource) slow(ctx context.Context, now time.Time) (*oauth2.Token, error) {
	for {
		s.mu.Lock()
		e := s.cur.Load() // again, under mu: a fetch may just have ended
		if e != nil && now.Before(e.staleAt) {
			s.mu.Unlock()
			return e.tok, nil
		}
		valid := e != nil && now.Before(e.expiry)
		if f := s.fetching; f != nil {
			s.mu.Unlock()
			if valid {
				return e.tok, nil
			}
			select {
			case <-f.done:
			case <-ctx.Done():
				return nil, fmt.Errorf("tokenbroker: credential %q: waiting for the token: %w", s.name, ctx.Err())
			}
			if f.err != nil && ctx.Err() == nil && isContextError(f.err) {
				// The caller that fetched gave up, not the broker: ask
				// ourselves.
				now = time.Now()
				continue
			}
			return f.tok, f.err
		}
		f := &flight{done: make(chan struct{})}
		s.fetching = f
		s.mu.Unlock()
		s.run(ctx, f, &s.fetching, s.fetch)
		if f.err != nil && valid {
			// The cached token still works; the next caller asks again.
			return e.tok, nil
		}
		return f.tok, f.err
	}
}

var errPanicked = errors.New("tokenbroker: the token request panicked")

// run sets f's outcome from fn, then ends the flight; it clears *slot when
// slot is not nil and still holds f.
func (s *TokenSource) run(ctx context.Context, f *flight, slot **flight, fn func(context.Context) (*oauth2.Token, error)) {
	f.err = errPanicked
	defer func() {
		s.mu.Lock()
		f.end = time.Now()
		if slot != nil && *slot == f {
			*slot = nil
		}
		s.mu.Unlock()
		close(f.done)
	}()
	f.tok, f.err = fn(ctx)
}

// fetch asks the broker for the token, retrying within s.retryFor, and
// caches it.
func (s *TokenSource) fetch(ctx context.Context) (*oauth2.Token, error) {
	var t Token
	err := retry(ctx, s.retryFor, func(ctx context.Context) error {
		var err error
		t, err = s.c.Token(ctx, s.name)
		return err
	})
	if err != nil {
		return nil, err
	}
	e := s.entry(t, time.Now())
	s.store(e)
	return e.tok, nil
}

// entry makes the cache entry of t, fetched at now.
func (s *TokenSource) entry(t Token, now time.Time) *cached {
	tok := &oauth2.Token{AccessToken: t.AccessToken, TokenType: t.TokenType, Expiry: t.ExpiresAt, ExpiresIn: int64(t.ExpiresIn)}
	left := t.ExpiresAt.Sub(now)
	if t.ExpiresAt.IsZero() || left <= 0 {
		// No usable expiry: hand it out once, never from the cache.
		return &cached{tok: tok}
	}
	margin := min(time.Minute, left/10) // the broker's minTTL
	if s.minTTL > 0 {
		margin = min(s.minTTL, left/2)
	}
	return &cached{tok: tok, staleAt: t.ExpiresAt.Add(-margin), expiry: t.ExpiresAt}
}

// store caches e unless the cache holds a token that expires later (a
// fetch that overlapped a renewal must not bring back the refused token).
func (s *TokenSource) store(e *cached) {
	for {
		old := s.cur.Load()
		if old != nil && old.expiry.After(e.expiry) {
			return
		}
		if s.cur.CompareAndSwap(old, e) {
			return
		}
	}
}

// renew returns a token to use instead of failed, which an API refused
// with 401: the cached token when it differs already, else the broker's
// after a forced refresh (POST /v1/tokens/{name}/refresh; when the broker
// refuses it, as it does right after another one, the broker's current
// token if it differs). Concurrent
// renewals of the same failed token share one refresh, as do those that
// start within renewReuse after it ended. The result may equal failed when
// the broker has nothing newer.
func (s *TokenSource) renew(ctx context.Context, failed *oauth2.Token) (*oauth2.Token, error) {
	s.mu.Lock()
	if e := s.cur.Load(); e != nil && e.tok.AccessToken != failed.AccessToken {
		s.mu.Unlock()
		return s.TokenContext(ctx)
	}
	f := s.renewing
	if f != nil && f.failed == failed.AccessToken && (f.end.IsZero() || time.Since(f.end) < renewReuse) {
		s.mu.Unlock()
		select {
		case <-f.done:
			return f.tok, f.err
		case <-ctx.Done():
			return nil, fmt.Errorf("tokenbroker: credential %q: waiting for a refresh: %w", s.name, ctx.Err())
		}
	}
	f = &flight{done: make(chan struct{}), failed: failed.AccessToken}
	s.renewing = f
	s.mu.Unlock()
	s.run(ctx, f, nil, func(ctx context.Context) (*oauth2.Token, error) {
		rerr := retry(ctx, s.retryFor, func(ctx context.Context) error { return s.c.Refresh(ctx, s.name) })
		if rerr != nil && (errors.Is(rerr, ErrUnreachable) || ctx.Err() != nil) {
			return nil, rerr
		}
		// Fetch even when the refresh was refused: the broker may hold a
		// newer token already (429 refresh_limited says so).
		tok, err := s.fetch(ctx)
		switch {
		case err != nil && rerr != nil:
			return nil, rerr
		case err != nil:
			return nil, err
		case rerr != nil && tok.AccessToken == failed.AccessToken:
			return nil, rerr
		}
		return tok, nil
	})
	return f.tok, f.err
}

func isContextError(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}
