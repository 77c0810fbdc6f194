// Package broker keeps one fresh access token per credential: it loads what
// a store.Store holds, refreshes each token in the background before it
// expires, writes rotated refresh tokens durably before handing the new
// access token out, and answers handouts from memory.
//
// It knows no provider (a credential's sources.Source does the talking), no
// socket (package api serves handouts), and no store type: it takes a
// credential for a refresh through a store.Claim, and the stores live in
// store/file (the embedded default), store/redis and store/fleet, which
// cmd/tokenbroker wires in.
package broker
