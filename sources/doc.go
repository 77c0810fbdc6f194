// Package sources obtains OAuth 2.0 access tokens: one Source per grant
// (client_credentials, refresh_token, password), each speaking a provider's
// Dialect, a declarative description of where the provider differs from
// RFC 6749.
//
// It knows nothing of stores, locks, schedulers or sockets: it turns a
// credential and the previous token into a new token or a classified error.
// Provider quirks live in the Dialect table (presets.go), never as branches
// elsewhere.
//
// The secrets an operator may rotate (client secrets, a password) reach a
// Source through the function it is built with (New), asked at every
// request: their owner, cmd's reload, swaps what it returns. Nothing sets
// them on a Source or an Endpoint from outside.
//
// Why not golang.org/x/oauth2's exchange: it cannot send a GET, put
// parameters in the query of a POST, read token_expires_in, classify a 200
// answer carrying an "error" field, or hand back Retry-After; and its
// AuthStyleAutoDetect retries a failed request, which can replay a rotating
// refresh token. One exchange driven by the Dialect keeps a single parser to
// test and fuzz. The client auth choice reuses oauth2.AuthStyle so the two
// read the same.
package sources
