package oauthtest

import (
	"net/http"
	"time"
)

// Dialect names one provider's way of speaking OAuth 2.0. Each dialect has
// its own token and authorization endpoints on the Provider, and a Client is
// registered with exactly one.
type Dialect string

// The dialects of PROVIDERS.md.
const (
	// Firework: client_credentials in a form body; authorization_code and
	// refresh_token in the query string of a POST, refresh without
	// client_secret but with redirect_uri; token_expires_in.
	Firework Dialect = "firework"
	// Livepush: the token endpoint is a GET; token_type "access_token".
	Livepush Dialect = "livepush"
	// Ingest: query or body, body or Basic auth, comma scopes, a vendor
	// Accept header, expires_in as a string, JWS access tokens.
	Ingest Dialect = "ingest"
	// VSRS: RFC 6749 with the password grant, credentials in the body.
	VSRS Dialect = "vsrs"
	// Generic: plain RFC 6749, every grant, Basic or body client auth.
	Generic Dialect = "generic"
)

// Dialects lists every dialect a Provider speaks.
func Dialects() []Dialect { return []Dialect{Firework, Livepush, Ingest, VSRS, Generic} }

// Grant types, as sent in grant_type.
const (
	grantClientCredentials = "client_credentials"
	grantRefreshToken      = "refresh_token"
	grantPassword          = "password"
	grantAuthorizationCode = "authorization_code"
)

// placement says where a dialect reads token request parameters.
type placement int

const (
	inBody        placement = iota // form body only; parameters in the URL are an error (RFC 6749 2.3.1)
	inQuery                        // query string only; the body is ignored
	inEither                       // query and form body, merged
	fireworkSplit                  // client_credentials in the body, the user grants in the query
)

// spec is how one dialect behaves; the handlers read it instead of
// branching on the dialect's name wherever they can.
type spec struct {
	tokenPath, authorizePath string
	method                   string // token endpoint method
	grants                   []string
	params                   placement
	basic                    bool   // HTTP Basic client authentication accepted
	accept                   string // media type the Accept header must list
	sep                      string // scope separator
	fixedScope               string // the only scope of user grants ("" = any)

	ccNeedsScope         bool // client_credentials must carry scope
	authorizeNeedsScope  bool // the authorization request must carry scope
	refreshWithoutSecret bool // refresh authenticates by client_id alone
	redirectRequired     bool // code and refresh must carry the client's redirect_uri
	redirectChecked      bool // a redirect_uri, when sent, must match the client's
	narrowOnCode         bool // the code exchange may narrow scope
	narrowOnRefresh      bool // a refresh may narrow scope
	repeatRefresh        bool // without rotation, a refresh answer repeats the refresh token
	refreshLifetime      time.Duration
	redirectStatus       int // status of the authorization endpoint's redirect
}

var specs = map[Dialect]*spec{
	Firework: {
		tokenPath:            "/firework/oauth/token",
		authorizePath:        "/firework/oauth/authorize",
		method:               http.MethodPost,
		grants:               []string{grantClientCredentials, grantAuthorizationCode, grantRefreshToken},
		params:               fireworkSplit,
		sep:                  " ",
		fixedScope:           "openid",
		ccNeedsScope:         true,
		refreshWithoutSecret: true,
		redirectRequired:     true,
		redirectChecked:      true,
		repeatRefresh:        true,
		refreshLifetime:      600000 * time.Second,
		redirectStatus:       http.StatusMovedPermanently,
	},
	Livepush: {
		tokenPath:      "/livepush/oauth2/access_token",
		authorizePath:  "/livepush/oauth2/authorize",
		method:         http.MethodGet,
		grants:         []string{grantAuthorizationCode, grantRefreshToken},
		params:         inQuery,
		sep:            " ",
		redirectStatus: http.StatusFound,
	},
	Ingest: {
		tokenPath:           "/ingest/token",
		authorizePath:       "/ingest/authorize",
		method:              http.MethodPost,
		grants:              []string{grantAuthorizationCode, grantRefreshToken, grantClientCredentials},
		params:              inEither,
		basic:               true,
		accept:              "application/vnd.ingest.v1+json",
		sep:                 ",",
		ccNeedsScope:        true,
		authorizeNeedsScope: true,
		redirectChecked:     true,
		narrowOnCode:        true,
		narrowOnRefresh:     true,
		repeatRefresh:       true,
		redirectStatus:      http.StatusFound,
	},
	VSRS: {
		tokenPath:       "/vsrs/oauth/token",
		authorizePath:   "/vsrs/oauth/authorize",
		method:          http.MethodPost,
		grants:          []string{grantPassword, grantAuthorizationCode, grantRefreshToken},
		params:          inBody,
		sep:             " ",
		narrowOnRefresh: true,
		redirectStatus:  http.StatusFound,
	},
	Generic: {
		tokenPath:       "/generic/token",
		authorizePath:   "/generic/authorize",
		method:          http.MethodPost,
		grants:          []string{grantClientCredentials, grantPassword, grantRefreshToken, grantAuthorizationCode},
		params:          inBody,
		basic:           true,
		sep:             " ",
		narrowOnRefresh: true,
		redirectStatus:  http.StatusFound,
	},
}
