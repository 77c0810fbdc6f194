// Package broker keeps one fresh access token per credential: it loads what
// a Store holds, refreshes each token in the background before it expires,
// writes rotated refresh tokens durably before handing the new access token
// out, and answers handouts from memory.
//
// It knows no provider (a credential's sources.Source does the talking) and
// no socket (package api serves handouts). Stores implement Store: FileStore
// is the embedded durable default; a fleet store adds locking across
// processes behind the same interface.
package broker
