package broker

import (
	"context"
	"errors"
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
type Store interface {
	// Load returns the stored record, or ErrNotFound.
	Load(ctx context.Context, key string) (Record, error)
	// Save writes rec if no record with the same or a higher generation is
	// stored; otherwise it returns ErrStale and writes nothing. When Save
	// returns nil the record survives a crash.
	Save(ctx context.Context, key string, rec Record) error
	// Lock takes the refresh lock of key, or returns ErrLockHeld at once.
	// Stores serving a single process may return a no-op Lease.
	Lock(ctx context.Context, key string) (Lease, error)
	Close() error
}

// Lease is a held refresh lock.
type Lease interface {
	Release(ctx context.Context) error
}

// HeldLease is a Lease that can say whether it is still held.
type HeldLease interface {
	Held(ctx context.Context) (bool, error)
}

// Watcher is implemented by stores shared between brokers: it reports keys
// whose record another broker changed, so that waiting brokers need not poll.
// Settler is a Store that may put back a copy of a record a peer has moved
// past: FleetStore repairs an emptied shared store from its local copy, and
// a broker that was down or missed an event holds an older generation than
// its peers. Settle waits, when key was put back moments ago, until peers
// had time to answer that write with a newer generation, and reports
// whether it waited; then read the record again. Call it under the lock,
// before spending a refresh token.
type Settler interface {
	Settle(ctx context.Context, key string) (waited bool, err error)
}

type Watcher interface {
	// Watch calls fn for every changed key until ctx ends.
	Watch(ctx context.Context, fn func(key string)) error
}

type noLease struct{}

func (noLease) Release(context.Context) error { return nil }
