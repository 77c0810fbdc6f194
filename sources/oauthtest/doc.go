// Package oauthtest is a local OAuth 2.0 authorization server for tests and
// for the demo: one real HTTP server on loopback that speaks every provider
// dialect in PROVIDERS.md (Firework, Livepush, Ingest, VSRS and plain
// RFC 6749), each under its own path prefix shaped like the real URL.
//
// It is as strict as the real providers are, so that a client mistake (a
// parameter in the wrong place, a missing header, a forgotten redirect_uri,
// a replayed refresh token) fails here as it would in production. It also
// models the state that makes token refresh hard: rotating refresh tokens
// with reuse detection that revokes the whole grant, refresh tokens that
// expire, one-time authorization codes, and an injectable clock. Inject
// queues faults (HTTP errors, OAuth errors, garbage bodies, odd lifetimes,
// delays, hang-ups) for the next matching requests.
//
// It knows nothing of the broker or of package sources: tests drive it with
// plain net/http or with the client under test.
//
// It is a test tool. Its tokens are signed with a throwaway key, its secrets
// live in memory in clear, and it has no rate limits or audit trail: it must
// never be used to protect anything real.
package oauthtest
