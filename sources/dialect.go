package sources

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

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

// Field names a Dialect setting in a FieldError, so that a caller can say
// which of its own settings (a variable, a flag) to change.
type Field string

// The fields Validate checks.
const (
	FieldTokenURL        Field = "TokenURL"
	FieldAuthorizeURL    Field = "AuthorizeURL"
	FieldMethod          Field = "Method"
	FieldParams          Field = "Params"
	FieldClientAuth      Field = "ClientAuth"
	FieldScopeSeparator  Field = "ScopeSeparator"
	FieldHeaders         Field = "Headers"
	FieldLifetimeFields  Field = "LifetimeFields"
	FieldTokenTypes      Field = "TokenTypes"
	FieldDefaultLifetime Field = "DefaultLifetime"
)

// FieldError is one problem with one Dialect field: what is wrong and what
// to do, without naming where the value came from.
type FieldError struct {
	Field   Field
	Problem string
}

func (e *FieldError) Error() string { return string(e.Field) + ": " + e.Problem }

// ForbiddenHeaders are set by the exchange itself, or carry credentials that
// belong in the client authentication and the secrets.
var ForbiddenHeaders = []string{"Authorization", "Proxy-Authorization", "Cookie", "Host", "Content-Type", "Content-Length", "Transfer-Encoding"}

// Validate reports what is wrong with a dialect, one *FieldError per
// problem. It is the one place these rules live.
func (d *Dialect) Validate() []error {
	var errs []error
	add := func(f Field, format string, args ...any) {
		errs = append(errs, &FieldError{Field: f, Problem: fmt.Sprintf(format, args...)})
	}
	if d.TokenURL == "" {
		add(FieldTokenURL, "no token endpoint; set the server's token URL (https://...)")
	} else if p := endpointProblem(d.TokenURL); p != "" {
		add(FieldTokenURL, "%s", p)
	}
	if p := endpointProblem(d.AuthorizeURL); d.AuthorizeURL != "" && p != "" {
		add(FieldAuthorizeURL, "%s", p)
	}
	switch d.Method {
	case "", http.MethodPost, http.MethodGet:
	default:
		add(FieldMethod, "%q is not GET or POST; use one of them", d.Method)
	}
	switch d.Params {
	case "", InBody, InQuery:
	default:
		add(FieldParams, "%q is not body or query; use one of them", d.Params)
	}
	if d.Method == http.MethodGet && d.Params == InBody {
		add(FieldParams, "body cannot go with a GET token endpoint; use query, or the POST method")
	}
	if d.ClientAuth != oauth2.AuthStyleInParams && d.ClientAuth != oauth2.AuthStyleInHeader {
		add(FieldClientAuth, "must be client_secret_basic or client_secret_post (AutoDetect retries, which can replay a rotating refresh token)")
	}
	switch d.ScopeSeparator {
	case "", " ", ",":
	default:
		add(FieldScopeSeparator, "%q is not a scope separator; use space or comma", d.ScopeSeparator)
	}
	for k, v := range d.Headers {
		switch {
		case !validHeaderName(k):
			add(FieldHeaders, "%q is not a valid header name; fix it", k)
		case slices.Contains(ForbiddenHeaders, http.CanonicalHeaderKey(k)):
			add(FieldHeaders, "%s cannot be set here: the broker sets it, or it carries credentials; use CLIENT_AUTH and CLIENT_SECRET", http.CanonicalHeaderKey(k))
		case v == "" || HasControl(v):
			add(FieldHeaders, "the value of %s is empty or holds a control character; fix it", k)
		}
	}
	for _, f := range d.LifetimeFields {
		if f == "" || strings.ContainsFunc(f, func(r rune) bool { return r <= ' ' || r == 0x7f || r == '"' }) {
			add(FieldLifetimeFields, "%q is not a JSON field name; set the field holding the lifetime in seconds, e.g. token_expires_in", f)
		}
	}
	for _, tt := range d.TokenTypes {
		if tt == "" || strings.ContainsFunc(tt, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
			add(FieldTokenTypes, "%q is not a token type; list token_type values separated by commas", tt)
		}
	}
	if d.DefaultLifetime < 0 || d.DefaultLifetime > MaxLifetime {
		add(FieldDefaultLifetime, "%s is outside 1s to %s; use a duration in that range", d.DefaultLifetime, MaxLifetime)
	}
	return errs
}

// endpointProblem says what keeps s from being a token or authorization
// endpoint, or "". It never echoes user info, which may hold a password.
func endpointProblem(s string) string {
	u, err := url.Parse(s)
	switch {
	case err == nil && u.User != nil:
		return "holds a user name or password; remove them and use CLIENT_ID and CLIENT_SECRET"
	case err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "":
		return fmt.Sprintf("%s is not an http(s) URL; set the provider's endpoint, e.g. https://auth.example.com/oauth/token", QuoteValue(s))
	case u.Fragment != "":
		return fmt.Sprintf("%s has a #fragment; remove it", QuoteValue(s))
	}
	return ""
}

func validHeaderName(s string) bool {
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("!#$%&'*+-.^_`|~", r)) {
			return false
		}
	}
	return s != ""
}

// HasControl reports whether s holds a control character or invalid UTF-8:
// such a value could forge a log line or a header.
func HasControl(s string) bool {
	return strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f || r == utf8.RuneError })
}

// QuoteValue quotes a non-secret value for a message, shortened, so that a
// stray control character cannot forge a line.
func QuoteValue(s string) string {
	const max = 80
	if utf8.RuneCountInString(s) > max {
		s = string([]rune(s)[:max]) + "…"
	}
	return strconv.Quote(s)
}

// WithDefaults is a copy of d with the defaults an exchange applies made
// explicit, for a reader (tokenbroker check). It shares d's slices and the
// defaults' own: do not change them in place.
func (d *Dialect) WithDefaults() Dialect {
	e := *d
	e.Method, e.Params, e.ScopeSeparator = d.method(), d.placement(), d.scopeSeparator()
	e.LifetimeFields, e.RefreshLifetimeFields = d.lifetimeFields(), d.refreshLifetimeFields()
	e.DefaultLifetime, e.MaxLifetime = d.defaultLifetime(), d.maxLifetime()
	return e
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
