// Package client talks to a running tokenbroker over its Unix socket: it
// fetches access tokens, lists credentials and forces refreshes.
//
// It is what local services link against, so it depends on the standard
// library only: it knows nothing of the broker's engine, stores or providers,
// and mirrors the wire format in its own types.
package client
