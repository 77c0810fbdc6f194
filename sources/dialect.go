package sources

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"golang.org/x/oauth2"
)

// Grant is an OAuth 2.0 grant type, as sent in grant_type.
type Grant string

// The grants a Source can run.
const (
	ClientCredentials Grant = "client_credentials"
	RefreshToken      Grant = "refresh_token"
	Password          Grant = "password"
	AuthorizationCode Grant = "authorization_code"
)

// Placement says where the request parameters travel.
type Placement string

// Placements.
const (
	InBody  Placement = "body"  // application/x-www-form-urlencoded body (RFC 6749)
	InQuery Placement = "query" // URL query string, empty body
)

// Dialect describes how one provider speaks OAuth 2.0. The zero value of
// every field means "as RFC 6749 says", so Generic is nearly empty and a new
// provider needs configuration, not code.
type Dialect struct {
	Provider string  // preset name: firework, livepush, ingest, vsrs, generic
	Grants   []Grant // grants this dialect serves; empty means all

	TokenURL     string
	AuthorizeURL string
	// AuthorizeScope, when set, is the scope every authorization request
	// carries, whatever the client's scopes (Firework user apps: openid).
	AuthorizeScope string

	Method string    // "POST" (default) or "GET"; GET implies InQuery
	Params Placement // default InBody
	// ClientAuth is oauth2.AuthStyleInParams (client_id and client_secret as
	// parameters) or oauth2.AuthStyleInHeader (HTTP Basic). Never AutoDetect:
	// it retries, which can replay a rotating refresh token.
	ClientAuth oauth2.AuthStyle

	RefreshOmitsSecret    bool // refresh sends client_id but no client_secret
	RefreshSendsRedirect  bool // refresh must carry redirect_uri
	RefreshSendsScope     bool // refresh narrows scope with the configured scopes
	ScopeSeparator        string
	Headers               map[string]string
	LifetimeFields        []string // tried in order; default expires_in, token_expires_in
	RefreshLifetimeFields []string // default refresh_token_expires_in, refresh_expires_in
	// TokenTypes lists the token_type values accepted as a bearer token,
	// compared without case. "" (absent) and "bearer" are always accepted.
	TokenTypes []string

	DefaultLifetime time.Duration // when the answer gives no lifetime at all; default 1h
	MaxLifetime     time.Duration // longer lifetimes are capped; default 7 days
}

// Defaults applied where a Dialect leaves a field empty.
const (
	DefaultLifetime = time.Hour
	MaxLifetime     = 7 * 24 * time.Hour
)

var (
	defaultLifetimeFields        = []string{"expires_in", "token_expires_in"}
	defaultRefreshLifetimeFields = []string{"refresh_token_expires_in", "refresh_expires_in"}
)

// Serves reports whether the dialect runs grant g.
func (d *Dialect) Serves(g Grant) bool { return len(d.Grants) == 0 || slices.Contains(d.Grants, g) }

// Validate reports what is wrong with a dialect, one error per problem.
func (d *Dialect) Validate() []error {
	var errs []error
	if d.TokenURL == "" {
		errs = append(errs, fmt.Errorf("no token URL"))
	} else if !strings.HasPrefix(d.TokenURL, "https://") && !strings.HasPrefix(d.TokenURL, "http://") {
		errs = append(errs, fmt.Errorf("token URL %q is not an http(s) URL", d.TokenURL))
	}
	switch d.Method {
	case "", http.MethodPost, http.MethodGet:
	default:
		errs = append(errs, fmt.Errorf("method %q is not GET or POST", d.Method))
	}
	switch d.Params {
	case "", InBody, InQuery:
	default:
		errs = append(errs, fmt.Errorf("parameter placement %q is not body or query", d.Params))
	}
	if d.Method == http.MethodGet && d.Params == InBody {
		errs = append(errs, fmt.Errorf("a GET token endpoint cannot take parameters in the body"))
	}
	switch d.ClientAuth {
	case oauth2.AuthStyleInParams, oauth2.AuthStyleInHeader:
	default:
		errs = append(errs, fmt.Errorf("client auth must be params or basic"))
	}
	return errs
}

func (d *Dialect) method() string {
	if d.Method == "" {
		return http.MethodPost
	}
	return d.Method
}

func (d *Dialect) placement() Placement {
	if d.Method == http.MethodGet {
		return InQuery
	}
	if d.Params == "" {
		return InBody
	}
	return d.Params
}

func (d *Dialect) scopeSeparator() string {
	if d.ScopeSeparator == "" {
		return " "
	}
	return d.ScopeSeparator
}

func (d *Dialect) lifetimeFields() []string {
	if len(d.LifetimeFields) == 0 {
		return defaultLifetimeFields
	}
	return d.LifetimeFields
}

func (d *Dialect) refreshLifetimeFields() []string {
	if len(d.RefreshLifetimeFields) == 0 {
		return defaultRefreshLifetimeFields
	}
	return d.RefreshLifetimeFields
}

func (d *Dialect) defaultLifetime() time.Duration {
	if d.DefaultLifetime <= 0 {
		return DefaultLifetime
	}
	return d.DefaultLifetime
}

func (d *Dialect) maxLifetime() time.Duration {
	if d.MaxLifetime <= 0 {
		return MaxLifetime
	}
	return d.MaxLifetime
}

func (d *Dialect) acceptsTokenType(tt string) bool {
	if tt == "" || strings.EqualFold(tt, "bearer") {
		return true
	}
	for _, ok := range d.TokenTypes {
		if strings.EqualFold(tt, ok) {
			return true
		}
	}
	return false
}
