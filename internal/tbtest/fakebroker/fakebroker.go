// Package fakebroker is a broker for tests of what serves one, the API:
// fixed tables instead of providers, stores and refreshes. It sits below
// tbtest, which imports nothing of tokenbroker, because it needs the
// broker's types.
package fakebroker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/sources"
)

// SecretToken is the fake's access token. It is longer than any echo of a
// rejected name and holds bytes ('/', '+', '=') that no echo repeats, so it
// can appear in an answer only because it was handed out.
const SecretToken = "SECRET/acc+ess.tok=en-0123456789-abcdefghij-xyz"

// Broker implements api.Broker from fixed tables: "svc" has a token, an
// hour long; "down", "pending" and "rejected" are unavailable; refreshing
// "flaky" or "waiting" fails; "panic" panics. Tests change the tables
// before they serve it.
type Broker struct {
	Tokens      map[string]broker.Handout
	Unavailable map[string]*broker.UnavailableError
	RefreshErr  map[string]error
	Statuses    []broker.Status
	// Block, when set, makes Token wait for it to close; Entered gets one
	// value per blocked call.
	Block   chan struct{}
	Entered chan struct{}

	mu        sync.Mutex
	refreshed []string
}

// New returns a Broker with the tables above.
func New() *Broker {
	now := time.Now()
	return &Broker{
		Tokens: map[string]broker.Handout{
			"svc": {AccessToken: sources.NewSecret(SecretToken), Expiry: now.Add(time.Hour)},
		},
		Unavailable: map[string]*broker.UnavailableError{
			"down": {Name: "down", State: broker.StateRetrying, Cause: errors.New("provider answered 503"),
				RetryAt: now.Add(90 * time.Second)},
			"pending": {Name: "pending", State: broker.StatePending},
			"rejected": {Name: "rejected", State: broker.StateRejected,
				Cause: &sources.ProviderError{Grant: sources.ClientCredentials, Status: 401, Code: "invalid_client"}},
		},
		RefreshErr: map[string]error{
			"flaky":   fmt.Errorf("refresh %q: %w", "flaky", &sources.ProviderError{Status: 502, Problem: "an HTML page"}),
			"waiting": fmt.Errorf("refresh %q: %w", "waiting", &broker.DeferredError{Until: now.Add(time.Hour)}),
		},
		Statuses: []broker.Status{
			{Name: "down", Provider: "firework", Grant: "client_credentials", State: broker.StateRetrying,
				Failures: 2, LastError: "provider answered 503", Action: "the broker retries with backoff"},
			{Name: "svc", Provider: "firework", Grant: "client_credentials", State: broker.StateOK,
				ExpiresAt: now.Add(time.Hour), Generation: 3},
		},
	}
}

// Token implements api.Broker.
func (f *Broker) Token(ctx context.Context, name string) (broker.Handout, error) {
	if name == "panic" {
		panic("the fake broker panics for " + name)
	}
	if f.Block != nil {
		f.Entered <- struct{}{}
		select {
		case <-f.Block:
		case <-ctx.Done():
			return broker.Handout{}, ctx.Err()
		}
	}
	if h, ok := f.Tokens[name]; ok {
		return h, nil
	}
	if e, ok := f.Unavailable[name]; ok {
		return broker.Handout{}, e
	}
	return broker.Handout{}, fmt.Errorf("%w %q", broker.ErrUnknownCredential, name)
}

// Refreshed returns the names Refresh was called with, in order.
func (f *Broker) Refreshed() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.refreshed)
}

// Status implements api.Broker.
func (f *Broker) Status() []broker.Status { return f.Statuses }

// Refresh implements api.Broker, and records name (see Refreshed).
func (f *Broker) Refresh(_ context.Context, name string) error {
	f.mu.Lock()
	f.refreshed = append(f.refreshed, name)
	f.mu.Unlock()
	if err, ok := f.RefreshErr[name]; ok {
		return err
	}
	if e, ok := f.Unavailable[name]; ok {
		return e
	}
	if _, ok := f.Tokens[name]; ok {
		return nil
	}
	return fmt.Errorf("%w %q", broker.ErrUnknownCredential, name)
}

// BeginAuthorization implements api.Broker: the fake authorizes "svc"
// only, with the state "good-state".
func (f *Broker) BeginAuthorization(name string) (broker.AuthRequest, error) {
	if name != "svc" {
		return broker.AuthRequest{}, fmt.Errorf("credential %q: %w", name, broker.ErrNotAuthorizable)
	}
	return broker.AuthRequest{URL: "https://provider.example/authorize?state=good-state", RedirectURI: "http://127.0.0.1:8976/callback",
		State: "good-state", Expires: time.Now().Add(broker.AuthTTL)}, nil
}

// CompleteAuthorization implements api.Broker.
func (f *Broker) CompleteAuthorization(_ context.Context, name, state, code string) (broker.Status, error) {
	if name != "svc" || state != "good-state" {
		return broker.Status{}, fmt.Errorf("credential %q: %w", name, broker.ErrUnknownState)
	}
	return f.Statuses[1], nil
}
