// Package store defines what the broker asks of durable storage: a Record
// per credential, a Store to read it and claim it for a refresh, and the
// errors stores report. Implementations live in file (the state
// directory), redis (shared by a fleet) and fleet (both, repairing each
// other); seal encrypts records at rest for all of them.
package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tokenbroker/tokenbroker/sources"
)

// Store errors, for errors.Is.
var (
	// ErrNotFound: the store holds no record under the key.
	ErrNotFound = errors.New("no stored record")
	// ErrStale: the store already holds this generation or a newer one; the
	// write was refused (the fence).
	ErrStale = errors.New("stored record is newer")
	// ErrCorrupt: the stored record cannot be read; the next write replaces it.
	ErrCorrupt = errors.New("stored record is unreadable")
	// ErrLockHeld: another holder refreshes this credential now.
	ErrLockHeld = errors.New("refresh lock held by another broker")
	// ErrUnknownKey: a stored value was sealed with a key this broker does
	// not have. It is not corruption: the broker must refuse to start rather
	// than overwrite what another key can still read.
	ErrUnknownKey = errors.New("stored record is sealed with an unknown key")
	// ErrLockLost: a claim lost its lock while it waited for peers (a store
	// that lost its data lost the lock with it, and a peer may hold it now).
	// It wraps ErrLockHeld.
	ErrLockLost = fmt.Errorf("the refresh lock was lost while waiting for peers (Redis lost its data?): %w", ErrLockHeld)
)

// Record is what a store keeps for a credential.
type Record struct {
	// Generation grows by one with each refresh. Writes are fenced on it: a
	// store keeps a record only if its generation is higher than the stored
	// one, so a stale writer can never overwrite a newer refresh token.
	Generation uint64
	Token      sources.Token
	// Seed identifies the operator-supplied refresh token this lineage grew
	// from (a hash, never the token), so that changing it in the environment
	// wins over a stored rotated one, and nothing else does.
	Seed      string
	UpdatedAt time.Time
}

// Store keeps records durably. Keys are opaque strings chosen by the broker.
// The engine refreshes a credential only through a Claim.
type Store interface {
	// Load returns the stored record, or ErrNotFound. It writes nothing.
	Load(ctx context.Context, key string) (Record, error)
	// Acquire claims key for a refresh: it takes the key's refresh lock (or
	// returns ErrLockHeld at once), brings the store to the record a
	// refresh must start from, and reads it. With Spend, a store that may
	// have put an old copy back (the fleet store) waits until peers had
	// time to answer with a newer one, and returns ErrLockLost if the lock
	// went meanwhile. With NoLock it takes no lock.
	Acquire(ctx context.Context, key string, mode Mode) (Claim, error)
	// Lock takes a lock that guards no record (the fleet's probe turn), or
	// returns ErrLockHeld at once.
	Lock(ctx context.Context, name string) (Lock, error)
	// Watch calls fn with each key another process changed, and with ""
	// when every key must be read again, until ctx ends. A store that no
	// other process shares returns nil at once.
	Watch(ctx context.Context, fn func(key string)) error
	Close() error
}

// Mode says what a claim is for.
type Mode uint8

// Modes of Acquire.
const (
	// Spend: the refresh will spend a secret (a rotating refresh token)
	// whose successor a peer may hold.
	Spend Mode = 1 << iota
	// NoLock: a refresh that spends nothing, when the lock cannot be taken.
	NoLock
)

// Lock is a held lock. Stores serving a single process hold it always.
type Lock interface {
	// Held reports whether the lock is still ours: a shared store that
	// restarts empty forgets it, and another broker may then take it.
	Held(ctx context.Context) (bool, error)
	Release(ctx context.Context) error
}

// Claim is a credential taken for a refresh: its lock and its record.
type Claim interface {
	Lock
	// Current returns the record read when the claim was taken, or
	// ErrNotFound, ErrCorrupt, ErrUnknownKey or a read error.
	Current() (Record, error)
	// Commit writes rec if no record with the same or a higher generation
	// is stored; otherwise it returns ErrStale and writes nothing. When it
	// returns nil the record survives a crash.
	Commit(ctx context.Context, rec Record) error
}

// NewClaim makes a Claim of a lock, the record read under it, and the
// store's fenced write.
func NewClaim(l Lock, rec Record, err error, commit func(context.Context, Record) error) Claim {
	return &claim{Lock: l, rec: rec, err: err, commit: commit}
}

type claim struct {
	Lock
	rec    Record
	err    error
	commit func(context.Context, Record) error
}

func (c *claim) Current() (Record, error)                     { return c.rec, c.err }
func (c *claim) Commit(ctx context.Context, rec Record) error { return c.commit(ctx, rec) }

// HeldLock is the Lock of a store no other process shares: always held.
var HeldLock Lock = held{}

type held struct{}

func (held) Held(context.Context) (bool, error) { return true, nil }
func (held) Release(context.Context) error      { return nil }
