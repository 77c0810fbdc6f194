package broker

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	"github.com/tokenbroker/tokenbroker/broker/store"
	"github.com/tokenbroker/tokenbroker/sources"
)

// AuthTTL is how long an authorization begun with BeginAuthorization may
// be completed.
const AuthTTL = 10 * time.Minute

// maxPendingAuth bounds the authorizations waiting to complete.
const maxPendingAuth = 32

// Authorization errors.
var (
	ErrNotAuthorizable = errors.New("this credential's grant does not use the authorization-code flow; only refresh_token credentials do")
	ErrUnknownState    = errors.New("the state matches no authorization begun here in the last 10 minutes (it expired, was used, or was forged); run tokenbroker authorize again")
)

// AuthRequest is an authorization begun for a credential: the browser goes
// to URL, and the provider sends it back to RedirectURI with a code and
// State.
type AuthRequest struct {
	URL         string
	RedirectURI string
	State       string
	Expires     time.Time
}

type pendingAuth struct {
	name     string
	verifier string
	expires  time.Time
}

// BeginAuthorization starts the authorization-code flow for name with a
// fresh state and PKCE verifier, which stay in this process.
func (b *Broker) BeginAuthorization(name string) (AuthRequest, error) {
	c := b.creds[name]
	if c == nil {
		return AuthRequest{}, fmt.Errorf("%w %q", ErrUnknownCredential, name)
	}
	az, ok := c.Source.(sources.Authorizer)
	if !ok {
		return AuthRequest{}, fmt.Errorf("credential %q: %w", name, ErrNotAuthorizable)
	}
	var raw [24]byte
	_, _ = rand.Read(raw[:])
	state := base64.RawURLEncoding.EncodeToString(raw[:])
	verifier := sources.NewVerifier()
	u, err := az.AuthCodeURL(state, verifier)
	if err != nil {
		return AuthRequest{}, fmt.Errorf("credential %q: %w", name, err)
	}
	now := time.Now()
	b.authMu.Lock()
	defer b.authMu.Unlock()
	if b.pending == nil {
		b.pending = map[string]pendingAuth{}
	}
	for s, p := range b.pending {
		if now.After(p.expires) {
			delete(b.pending, s)
		}
	}
	if len(b.pending) >= maxPendingAuth {
		return AuthRequest{}, fmt.Errorf("credential %q: %d authorizations are already waiting; complete them or wait %s", name, len(b.pending), AuthTTL)
	}
	b.pending[state] = pendingAuth{name: name, verifier: verifier, expires: now.Add(AuthTTL)}
	return AuthRequest{URL: u, RedirectURI: az.RedirectURI(), State: state, Expires: now.Add(AuthTTL)}, nil
}

// CompleteAuthorization trades code for a token, for the authorization
// begun with state, and stores it as name's newest record (so every broker
// of a fleet takes it), then hands it out and keeps it fresh.
func (b *Broker) CompleteAuthorization(ctx context.Context, name, state, code string) (Status, error) {
	c := b.creds[name]
	if c == nil {
		return Status{}, fmt.Errorf("%w %q", ErrUnknownCredential, name)
	}
	b.authMu.Lock()
	p, ok := b.pending[state]
	if ok && p.name == name {
		delete(b.pending, state) // one use only
	}
	b.authMu.Unlock()
	if !ok || p.name != name || time.Now().After(p.expires) {
		return Status{}, fmt.Errorf("credential %q: %w", name, ErrUnknownState)
	}
	if b.ctx == nil {
		return Status{}, errors.New("broker is not running")
	}
	az := c.Source.(sources.Authorizer)
	rctx, cancel := context.WithTimeout(ctx, b.opts.RequestTimeout)
	tok, err := az.ExchangeCode(rctx, code, p.verifier)
	cancel()
	if err != nil {
		return Status{}, fmt.Errorf("credential %q: exchanging the code: %w", name, err)
	}
	if err := b.install(ctx, c, tok); err != nil {
		return Status{}, fmt.Errorf("credential %q: storing the new token: %w (authorize again)", name, err)
	}
	b.log.Info("credential authorized", "credential", name, "expires_at", tok.Expiry.UTC().Format(time.RFC3339))
	return c.status(), nil
}

// install stores tok as c's next generation under the refresh lock, hands
// it out and schedules its refresh.
func (b *Broker) install(ctx context.Context, c *cred, tok sources.Token) error {
	var claim store.Claim
	for {
		var err error
		claim, err = b.opts.Store.Acquire(ctx, c.key, 0)
		if err == nil {
			break
		}
		if !errors.Is(err, store.ErrLockHeld) {
			return err
		}
		select { // a refresh is in flight; it ends within its timeout
		case <-time.After(200 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	defer releaseLock(ctx, claim)
	cur, err := claim.Current()
	if _, err := b.adopt(c, cur, err); err != nil {
		return err
	}
	now := time.Now()
	c.mu.Lock()
	rec := store.Record{Generation: c.gen + 1, Token: tok, Seed: c.seed, UpdatedAt: now}
	c.hold(rec)
	c.unsaved = true
	c.mu.Unlock()
	if err := b.save(ctx, c, claim, rec); err != nil {
		return err
	}
	c.mu.Lock()
	c.state, c.failures, c.lastErr = StateOK, 0, nil
	next := b.refreshPoint(&c.tok, now)
	c.nextRefresh = next
	c.mu.Unlock()
	b.sched.schedule(c, next)
	return nil
}
