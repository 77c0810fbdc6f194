// Package client talks to a running tokenbroker over its Unix socket: it
// fetches access tokens, lists credentials and forces refreshes.
//
// Client.TokenSource caches a credential's token in the process and
// implements golang.org/x/oauth2's TokenSource; Client.Transport and
// Client.HTTPClient put the token on outgoing requests and ask the broker
// for a fresh one when an API answers 401.
//
// It is what local services link against, so it is a module of its own
// (go get github.com/tokenbroker/tokenbroker/api/client) that depends on
// the standard library and golang.org/x/oauth2 only: it knows nothing of
// the broker's engine, stores or providers, and mirrors the wire format in
// its own types. The daemon's api/contract tests decode the real server's
// answers with them.
package client
