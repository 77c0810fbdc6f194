package broker

import "time"

// Observer receives the engine's events, for metrics. Its methods are called
// on the refresh path, never on the handout path, and must not block.
type Observer interface {
	// Refreshed reports one refresh attempt of a credential and its result.
	Refreshed(credential, provider string, result Result, d time.Duration)
	// LockWaited reports how long taking the refresh lock took and whether
	// it was acquired ("acquired"), held by a peer ("held") or failed
	// ("error").
	LockWaited(credential string, d time.Duration, outcome string)
	// RequestSlow reports a sent request that spends a refresh token and
	// is still unanswered after RequestTimeout: it is awaited, not resent.
	RequestSlow(provider string)
	// AnswerLost reports a sent request that spends a refresh token whose
	// connection closed with no answer: the provider may have spent it.
	AnswerLost(provider string)
	// Endpoint reports a change in the health of a provider's token
	// endpoint. It names the provider, never a credential.
	Endpoint(provider string, event EndpointEvent)
}

// EndpointEvent is a change in a provider endpoint's health.
type EndpointEvent string

// Endpoint events.
const (
	EndpointFailing   EndpointEvent = "failing"   // a request found it failing: probing begins
	EndpointProbe     EndpointEvent = "probe"     // one probe request goes to it
	EndpointRecovered EndpointEvent = "recovered" // it answered: the waiting credentials refresh
)

// Result is how a refresh attempt ended.
type Result string

// Results.
const (
	ResultOK          Result = "ok"          // the provider issued a token and it was stored
	ResultAdopted     Result = "adopted"     // a peer had refreshed; its token was taken
	ResultPeer        Result = "peer"        // a peer holds the lock; looking again shortly
	ResultTransient   Result = "transient"   // failed; retrying with backoff
	ResultReauthorize Result = "reauthorize" // the grant is dead; an operator must authorize again
	ResultRejected    Result = "rejected"    // the provider refuses the configuration
)

type noObserver struct{}

func (noObserver) Refreshed(string, string, Result, time.Duration) {}
func (noObserver) LockWaited(string, time.Duration, string)        {}
func (noObserver) RequestSlow(string)                              {}
func (noObserver) AnswerLost(string)                               {}
func (noObserver) Endpoint(string, EndpointEvent)                  {}
