package oauthtest

import (
	"net/http"
	"time"
)

// Fault is a misbehaviour of the token endpoint, queued by Inject. The
// answer is chosen in this order: Hangup, a raw Body (BodySet), an
// OAuthError, a bare non-200 Status; otherwise the request is handled
// normally and ExpiresIn, when set, replaces the reported lifetime.
type Fault struct {
	Dialect  Dialect // only requests to this dialect's token endpoint; "" = any
	ClientID string  // only requests from this client_id; "" = any
	Times    int     // how many matching requests it applies to; default 1

	Status     int    // HTTP status; 0 means 200, or 400 (401 for invalid_client) with OAuthError
	RetryAfter string // Retry-After header value; "" = none
	// Body is sent verbatim instead of an answer when BodySet is true, e.g.
	// "<html>oops</html>", "" or `{"access_token":`.
	Body        string
	BodySet     bool
	ContentType string // of a raw Body; default application/json
	// OAuthError sends an RFC 6749 5.2 error answer with this code, such as
	// "temporarily_unavailable" or "invalid_grant".
	OAuthError string
	// Delay holds the answer back; it ends early when the client goes away
	// or the Provider closes, and then nothing is sent.
	Delay time.Duration
	// Detached makes Delay ignore the client, as a provider behind a load
	// balancer does: the request is acted on after the whole Delay even if
	// its client gave up, and the answer is lost. Only Close ends it early.
	Detached bool
	// ExpiresIn replaces the lifetime field (expires_in, or Firework's
	// token_expires_in) of a successful answer: 0, -5, 315360000, "abc"...
	// The token's real expiry (Valid, JWT exp) is unchanged.
	ExpiresIn any
	// Hangup closes the connection without an answer.
	Hangup bool
	// AfterProcessing handles the request first (spending a code, rotating
	// a refresh token) and then answers as the fault says: the client loses
	// an answer the server acted on.
	AfterProcessing bool
}

// Inject queues f for the next f.Times token requests that match it. Faults
// are consumed in the order they were injected; a request takes the first
// one that matches.
func (p *Provider) Inject(f Fault) {
	if f.Times <= 0 {
		f.Times = 1
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.faults = append(p.faults, &f)
}

// takeFault consumes one use of the first fault matching the request.
// p.mu must be held.
func (p *Provider) takeFault(d Dialect, clientID string) *Fault {
	for i, f := range p.faults {
		if (f.Dialect != "" && f.Dialect != d) || (f.ClientID != "" && f.ClientID != clientID) {
			continue
		}
		f.Times--
		if f.Times == 0 {
			p.faults = append(p.faults[:i:i], p.faults[i+1:]...)
		}
		p.stats.Faults++
		c := *f
		return &c
	}
	return nil
}

func (p *Provider) applyFault(w http.ResponseWriter, r *http.Request, f *Fault, handle func() reply) {
	if f.Delay > 0 {
		p.sleeping.Add(1)
		t := time.NewTimer(f.Delay)
		ctx := r.Context()
		if f.Detached {
			ctx = p.base
		}
		select {
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
		p.sleeping.Add(-1)
		if ctx.Err() != nil {
			panic(http.ErrAbortHandler) // drop the connection: nothing is sent
		}
	}
	var rep reply
	if f.AfterProcessing {
		rep = handle()
	}
	if f.RetryAfter != "" {
		w.Header().Set("Retry-After", f.RetryAfter)
	}
	switch {
	case f.Hangup:
		if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
			conn.Close()
		}
	case f.BodySet:
		ct := f.ContentType
		if ct == "" {
			ct = "application/json"
		}
		w.Header().Set("Content-Type", ct)
		status := f.Status
		if status == 0 {
			status = http.StatusOK
		}
		w.WriteHeader(status)
		w.Write([]byte(f.Body))
	case f.OAuthError != "":
		e := fail(f.OAuthError, "injected fault")
		if f.Status != 0 {
			e.status = f.Status
		}
		write(w, e.reply())
	case f.Status != 0 && f.Status != http.StatusOK:
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(f.Status)
		w.Write([]byte(http.StatusText(f.Status) + "\n"))
	default:
		if !f.AfterProcessing {
			rep = handle()
		}
		if f.ExpiresIn != nil && rep.status == http.StatusOK && rep.lifetime != "" {
			rep.body[rep.lifetime] = f.ExpiresIn
		}
		write(w, rep)
	}
}

// ClearFaults drops every queued fault: the provider recovers.
func (p *Provider) ClearFaults() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.faults = nil
}
