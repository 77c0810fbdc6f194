package oauthtest

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log"
	"maps"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Provider is a local OAuth 2.0 authorization server speaking every Dialect
// over real HTTP. It is safe for concurrent use.
type Provider struct {
	opts Options

	denyAuthorization bool   // guarded by mu
	key               []byte // HS256 key of the JWT access tokens
	url               string
	srv               *http.Server
	base              context.Context    // every request's, until Close
	stop              context.CancelFunc // cancels every request's context
	served            chan struct{}      // closed when Serve returns
	close             sync.Once
	closeErr          error
	sleeping          atomic.Int32 // requests inside a fault's Delay (for tests)

	mu      sync.Mutex
	clients map[string]Client
	users   map[string]string
	codes   map[string]*code
	refresh map[string]*refreshToken
	reuses  []reuse
	access  map[string]*accessToken
	faults  []*Fault
	stats   Stats
}

// Options configure a Provider. The zero value is usable.
type Options struct {
	// AccessLifetime is the lifetime of access tokens (expires_in, and
	// Firework's token_expires_in); default 1h.
	AccessLifetime time.Duration
	// RefreshLifetime is the lifetime of refresh tokens, counted from their
	// issue. 0 means they never expire, except for Firework, whose refresh
	// tokens live 600000 s unless this says otherwise (the Firework user
	// answer reports it as refresh_token_expires_in).
	RefreshLifetime time.Duration
	// Rotate issues a new refresh token on every refresh and spends the old
	// one; presenting a spent one revokes its whole grant.
	Rotate bool
	// Now is the clock for every expiry; default time.Now.
	Now func() time.Time
	// Addr is the listen address; default "127.0.0.1:0".
	Addr string
}

// Client is an OAuth client registered with a Provider.
type Client struct {
	ID     string
	Secret string // "" for a public client, which sends none
	// OtherSecrets are accepted too, as a provider does while a client
	// rotates its secret.
	OtherSecrets []string
	// Scopes are the scopes the client may ask for. Firework user grants
	// always get "openid".
	Scopes      []string
	RedirectURI string
	Dialect     Dialect // the provider the client is registered with; "" = Generic
}

// Stats counts what a Provider has seen since it started.
type Stats struct {
	TokenRequests int // requests that reached a token endpoint with the right method
	Issued        int // access tokens issued
	Refreshes     int // successful refresh_token grants
	ReuseEvents   int // spent (rotated) refresh tokens presented again
	Rejected      int // error answers the Provider chose (not injected faults)
	Faults        int // requests an injected Fault applied to
	// ByGrant counts token requests by grant_type ("" when absent).
	ByGrant map[string]int
	// ByClient counts token requests by client_id ("" when absent).
	ByClient map[string]int
}

// A family is everything that descends from one authorization: its refresh
// tokens and access tokens are revoked together.
type family struct {
	client  string
	subject string
	scopes  []string
	revoked bool
}

type refreshToken struct {
	fam       *family
	value     string
	expires   time.Time // zero: never
	spent     bool
	spentAt   time.Time
	successor *refreshToken // issued when this one was spent
	presented bool          // offered in a refresh request, accepted or not
}

// Reuse describes one reuse event: a spent refresh token presented again.
type Reuse struct {
	ClientID string
	// SpentAt is when the token was first spent, that is when the provider
	// rotated it and answered with its successor.
	SpentAt time.Time
	At      time.Time
	// SuccessorPresented tells whether the successor issued at SpentAt
	// was ever offered back. A client that died between the answer and
	// saving it never offers it; two live clients spending one token do.
	SuccessorPresented bool
}

// Reuses lists the reuse events so far.
func (p *Provider) Reuses() []Reuse {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]Reuse, len(p.reuses))
	for i, r := range p.reuses {
		out[i] = Reuse{ClientID: r.rt.fam.client, SpentAt: r.rt.spentAt, At: r.at,
			SuccessorPresented: r.rt.successor != nil && r.rt.successor.presented}
	}
	return out
}

type reuse struct {
	rt *refreshToken
	at time.Time
}

type accessToken struct {
	fam     *family
	expires time.Time
}

type code struct {
	client, redirectURI string
	scopes              []string
	expires             time.Time
	challenge, method   string  // PKCE (RFC 7636)
	fam                 *family // set once exchanged
}

// codeLifetime is how long an authorization code stays valid (RFC 6749
// 4.1.2 recommends at most 10 minutes).
const codeLifetime = 10 * time.Minute

// Start starts a Provider listening on opts.Addr (default an ephemeral
// loopback port). Close stops it.
func Start(opts Options) (*Provider, error) {
	if opts.AccessLifetime <= 0 {
		opts.AccessLifetime = time.Hour
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("oauthtest: %w", err)
	}
	ctx, stop := context.WithCancel(context.Background())
	p := &Provider{
		opts:    opts,
		key:     []byte(rand.Text()),
		url:     "http://" + ln.Addr().String(),
		base:    ctx,
		stop:    stop,
		served:  make(chan struct{}),
		clients: map[string]Client{},
		users:   map[string]string{},
		codes:   map[string]*code{},
		refresh: map[string]*refreshToken{},
		access:  map[string]*accessToken{},
		stats:   Stats{ByGrant: map[string]int{}, ByClient: map[string]int{}},
	}
	p.srv = &http.Server{
		Handler:           p,
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return ctx },
		ErrorLog:          log.New(io.Discard, "", 0), // its messages may quote request URLs, which hold secrets here
	}
	go func() {
		defer close(p.served)
		p.srv.Serve(ln)
	}()
	return p, nil
}

// TB is the part of testing.TB that StartTest uses.
type TB interface {
	Helper()
	Cleanup(func())
	Fatalf(format string, args ...any)
}

// StartTest starts a Provider for a test, failing it if that is impossible,
// and closes the Provider when the test ends.
func StartTest(t TB, opts Options) *Provider {
	t.Helper()
	p, err := Start(opts)
	if err != nil {
		t.Fatalf("%v", err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// Close stops the server, cancels requests in flight (a fault's Delay ends
// at once) and waits for every handler to return.
func (p *Provider) Close() error {
	p.close.Do(func() {
		p.stop()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := p.srv.Shutdown(ctx); err != nil {
			p.closeErr = errors.Join(err, p.srv.Close())
		}
		<-p.served
	})
	return p.closeErr
}

// URL returns the server's base URL, such as http://127.0.0.1:41234.
func (p *Provider) URL() string { return p.url }

// TokenURL returns the token endpoint of dialect d ("" for an unknown one).
func (p *Provider) TokenURL(d Dialect) string {
	if sp := specs[d]; sp != nil {
		return p.url + sp.tokenPath
	}
	return ""
}

// AuthorizeURL returns the authorization endpoint of dialect d ("" for an
// unknown one). It approves every valid request at once.
func (p *Provider) AuthorizeURL(d Dialect) string {
	if sp := specs[d]; sp != nil {
		return p.url + sp.authorizePath
	}
	return ""
}

// AddClient registers c, replacing any client with the same ID. It panics
// on an unknown dialect.
func (p *Provider) AddClient(c Client) {
	if c.Dialect == "" {
		c.Dialect = Generic
	}
	if specs[c.Dialect] == nil {
		panic(fmt.Sprintf("oauthtest: AddClient %q: unknown dialect %q", c.ID, c.Dialect))
	}
	c.Scopes = slices.Clone(c.Scopes)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.clients[c.ID] = c
}

// AddUser registers a resource owner for the password grant.
func (p *Provider) AddUser(username, password string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.users[username] = password
}

// IssueRefreshToken returns a refresh token for the client as if an
// authorization_code flow had just completed, with the client's scopes
// (Firework: openid). It panics on an unknown client.
func (p *Provider) IssueRefreshToken(clientID string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := p.mustClient("IssueRefreshToken", clientID)
	fam := &family{client: c.ID, subject: newUUID(), scopes: userScopes(c)}
	return p.newRefresh(fam, specs[c.Dialect], p.opts.Now()).value
}

// IssueCode returns a one-time authorization code for the client as if the
// user had just approved scopes (nil: the client's; Firework: openid) at the
// authorization endpoint. When redirectURI is not "", the token request must
// repeat it. It panics on an unknown client.
func (p *Provider) IssueCode(clientID, redirectURI string, scopes []string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := p.mustClient("IssueCode", clientID)
	if scopes == nil || specs[c.Dialect].fixedScope != "" {
		scopes = userScopes(c)
	}
	return p.newCode(&code{client: c.ID, redirectURI: redirectURI, scopes: slices.Clone(scopes)})
}

// Valid reports whether accessToken was issued by p, has not expired by p's
// clock and has not been revoked.
func (p *Provider) Valid(accessToken string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	a := p.access[accessToken]
	return a != nil && !a.fam.revoked && p.opts.Now().Before(a.expires)
}

// Revoke revokes the grant an access or refresh token belongs to, with every
// token descending from it, as a user withdrawing consent would. It reports
// whether the token was known.
func (p *Provider) Revoke(token string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if r := p.refresh[token]; r != nil {
		r.fam.revoked = true
		return true
	}
	if a := p.access[token]; a != nil {
		a.fam.revoked = true
		return true
	}
	return false
}

// Stats returns a snapshot of the counters.
func (p *Provider) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.stats
	s.ByGrant = maps.Clone(s.ByGrant)
	s.ByClient = maps.Clone(s.ByClient)
	return s
}

func (p *Provider) mustClient(op, id string) Client {
	c, ok := p.clients[id]
	if !ok {
		panic(fmt.Sprintf("oauthtest: %s: unknown client %q", op, id))
	}
	return c
}

// userScopes are the scopes a user grant gets when nothing narrows them.
func userScopes(c Client) []string {
	if fs := specs[c.Dialect].fixedScope; fs != "" {
		return []string{fs}
	}
	return slices.Clone(c.Scopes)
}

// newRefresh issues a refresh token in fam. p.mu must be held.
func (p *Provider) newRefresh(fam *family, sp *spec, now time.Time) *refreshToken {
	life := p.opts.RefreshLifetime
	if life <= 0 {
		life = sp.refreshLifetime
	}
	r := &refreshToken{fam: fam, value: "rt_" + rand.Text()}
	if life > 0 {
		r.expires = now.Add(life)
	}
	p.refresh[r.value] = r
	return r
}

// newCode stores c with a fresh code. p.mu must be held.
func (p *Provider) newCode(c *code) string {
	v := "code_" + rand.Text()
	c.expires = p.opts.Now().Add(codeLifetime)
	p.codes[v] = c
	return v
}

func newUUID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
