// Package fleet is the store of a broker in a fleet: the shared store
// (Redis) decides, and a local one (the state directory) keeps a durable
// copy of every record, so that a Redis that comes back empty loses nothing.
package fleet

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/tokenbroker/tokenbroker/broker/store"
	"github.com/tokenbroker/tokenbroker/broker/store/file"
	"github.com/tokenbroker/tokenbroker/broker/store/redis"
	"github.com/tokenbroker/tokenbroker/internal/crashpoint"
)

// Local is what the fleet store asks of its local store (file.Store).
type Local interface {
	Load(ctx context.Context, key string) (store.Record, error)
	Save(ctx context.Context, key string, rec store.Record) error
	Keys() ([]string, error)
	Close() error
}

// Shared is what the fleet store asks of its shared store (redis.Store).
type Shared interface {
	Load(ctx context.Context, key string) (store.Record, error)
	Save(ctx context.Context, key string, rec store.Record) error
	Lock(ctx context.Context, key string) (store.Lock, error)
	Watch(ctx context.Context, fn func(key string)) error
	Close() error
}

var (
	_ store.Store = (*Store)(nil)
	_ Local       = (*file.Store)(nil)
	_ Shared      = (*redis.Store)(nil)
)

// Options tune a Store; zero values take the defaults.
type Options struct {
	Logger *slog.Logger // default slog.Default()
	// SettleTime is how long a claim that spends waits after this broker
	// put a local record back into the shared store. Default 2s: after an
	// outage a peer may need ~1.3s to answer (go-redis probes a server it
	// gave up on once a second, the watch resubscribes within 250ms).
	SettleTime time.Duration
	// PushInterval is how often records saved only locally, while the
	// shared store failed, are offered to it again. Default 100ms.
	PushInterval time.Duration
}

// Store shares records through a shared store (Redis) and keeps a
// durable copy of every record it sees in a local one (the state dir). The
// shared store decides: its lock and its fence. The local copy makes a
// whole-fleet restart over an empty Redis lose nothing.
//
// Reads write nothing. One step, repair, writes a record across: the newer
// of the two copies goes to the other side. It runs for every known key
// (the local records, and every key read) once at start or when first read,
// and again on reconnection; for a key a read found newer in the shared
// store than here; for a key a peer changed; and under the lock when a
// claim is taken. From New to Close a loop runs the repairs due and
// offers the shared store the records it missed while it failed.
type Store struct {
	local      Local
	shared     Shared
	log        *slog.Logger
	every      time.Duration
	settleTime time.Duration // Options.SettleTime

	putBack sync.Map // key -> time.Time of the last put-back
	pending sync.Map // key -> generation saved locally, not yet shared
	known   sync.Map // key -> struct{}: local records and keys read
	dirty   sync.Map // key -> struct{}: known keys to repair
	wake    chan struct{}

	stop context.CancelFunc
	done chan struct{}
}

// New returns a store over local and shared, and starts
// repairing the shared store and offering it what it missed, until Close.
// It owns both stores: Close closes them.
func New(local Local, shared Shared, opts Options) *Store {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.SettleTime <= 0 {
		opts.SettleTime = 2 * time.Second
	}
	if opts.PushInterval <= 0 {
		opts.PushInterval = 100 * time.Millisecond
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Store{local: local, shared: shared, log: opts.Logger, every: opts.PushInterval,
		settleTime: opts.SettleTime, stop: cancel, done: make(chan struct{}), wake: make(chan struct{}, 1)}
	go s.run(ctx)
	return s
}

// newest picks what a read returns of the two copies.
func newest(shared store.Record, serr error, local store.Record, lerr error) (store.Record, error) {
	switch {
	case serr == nil && (lerr != nil || shared.Generation >= local.Generation):
		return shared, nil
	case lerr == nil:
		return local, nil
	case errors.Is(lerr, store.ErrNotFound) && serr != nil && !errors.Is(serr, store.ErrNotFound):
		return store.Record{}, serr
	}
	return store.Record{}, lerr
}

// Load implements store.Store: the newer of the two copies. A newer shared one
// is due to be copied here, by the loop.
func (s *Store) Load(ctx context.Context, key string) (store.Record, error) {
	s.know(key)
	shared, serr := s.shared.Load(ctx, key)
	local, lerr := s.local.Load(ctx, key)
	if serr == nil && (errors.Is(lerr, store.ErrNotFound) || lerr == nil && shared.Generation > local.Generation) {
		s.due(key)
	}
	return newest(shared, serr, local, lerr)
}

// repair writes the newer copy of key over the older one, and returns the
// newer as Load would (rec, err); failed reports that the shared store
// failed.
// Keeping the local copy up lets this broker restart from the newest
// record even if Redis comes back empty; putting the local record back
// repairs a shared store that lost it, and the fence keeps whichever
// generation is higher. Peers answer a put-back through the store's event
// with their own repair, so one holding a newer generation writes it back.
func (s *Store) repair(ctx context.Context, key string) (rec store.Record, failed bool, err error) {
	shared, serr := s.shared.Load(ctx, key)
	local, lerr := s.local.Load(ctx, key)
	switch {
	case serr == nil && (lerr != nil || shared.Generation > local.Generation):
		if err := s.local.Save(ctx, key, shared); err != nil && !errors.Is(err, store.ErrStale) {
			s.log.Warn("cannot keep the local copy", "key", key, "err", err)
		}
	case lerr == nil && (serr == nil || errors.Is(serr, store.ErrNotFound) || errors.Is(serr, store.ErrCorrupt)) && (serr != nil || shared.Generation < local.Generation):
		err := s.shared.Save(ctx, key, local)
		if err == nil {
			s.pending.Delete(key)
			s.putBack.Store(key, time.Now())
			s.log.Info("put the local record back into the shared store", "key", key, "generation", local.Generation)
		}
		failed = err != nil && !errors.Is(err, store.ErrStale)
	}
	if serr != nil && !errors.Is(serr, store.ErrNotFound) && !errors.Is(serr, store.ErrCorrupt) {
		failed = true
	}
	rec, err = newest(shared, serr, local, lerr)
	return rec, failed, err
}

// know marks key for the loop's repair the first time it is seen.
func (s *Store) know(key string) {
	if _, seen := s.known.LoadOrStore(key, struct{}{}); !seen {
		s.due(key)
	}
}

// due marks key for the loop's repair, and wakes the loop.
func (s *Store) due(key string) {
	s.dirty.Store(key, struct{}{})
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// repairDirty repairs the keys marked for it until the shared store fails.
func (s *Store) repairDirty(ctx context.Context) {
	s.dirty.Range(func(k, _ any) bool {
		if _, failed, _ := s.repair(ctx, k.(string)); failed {
			return false // try again at the next tick
		}
		s.dirty.Delete(k)
		return true
	})
}

// Acquire implements store.Store: the claim is the shared lock, under which key
// is repaired; a claim that spends then settles. Peers answer a put-back
// through the store's event: each reads the shared record, and one holding
// a newer generation writes that back, which the fence lets through.
func (s *Store) Acquire(ctx context.Context, key string, mode store.Mode) (store.Claim, error) {
	commit := func(ctx context.Context, rec store.Record) error { return s.save(ctx, key, rec) }
	if mode&store.NoLock != 0 {
		rec, err := s.Load(ctx, key)
		return store.NewClaim(store.HeldLock, rec, err, commit), nil
	}
	s.know(key)
	l, err := s.shared.Lock(ctx, key)
	if err != nil {
		return nil, err
	}
	rec, _, err := s.repair(ctx, key)
	if mode&store.Spend != 0 {
		waited, serr := s.settle(ctx, key)
		if serr == nil && waited {
			// A store that lost its data may lose the lock with it, and a
			// peer may hold it now: never spend on a lock we no longer have.
			if held, herr := l.Held(ctx); herr != nil || !held {
				serr = store.ErrLockLost
			}
			rec, err = s.Load(ctx, key)
		}
		if serr != nil {
			release(ctx, l)
			return nil, serr
		}
	}
	return store.NewClaim(l, rec, err, commit), nil
}

// settle waits, when key was put back moments ago, until peers had time to
// answer that write with a newer generation, and reports whether it waited.
func (s *Store) settle(ctx context.Context, key string) (bool, error) {
	v, ok := s.putBack.LoadAndDelete(key)
	if !ok {
		return false, nil
	}
	wait := time.Until(v.(time.Time).Add(s.settleTime))
	if wait <= 0 {
		return false, nil
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
		return true, nil
	case <-ctx.Done():
		return false, ctx.Err()
	}
}

func release(ctx context.Context, l store.Lock) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	_ = l.Release(rctx)
}

// save writes the shared copy first, then the local one. In that order a
// broker that dies between the two writes leaves the fleet the new record
// (a peer never spends a refresh token this broker already spent), and
// itself adopts it on restart, since Load takes the newer generation. A
// shared store that is unreachable does not fail the save: the record is
// durable here and offered to it until it takes it. Its fence does.
func (s *Store) save(ctx context.Context, key string, rec store.Record) error {
	serr := s.shared.Save(ctx, key, rec)
	if errors.Is(serr, store.ErrStale) {
		return store.ErrStale
	}
	if serr == nil {
		crashpoint.At(crashpoint.BetweenStores)
	}
	lerr := s.local.Save(ctx, key, rec)
	switch {
	case serr == nil:
		s.pending.Delete(key)
		if lerr != nil && !errors.Is(lerr, store.ErrStale) {
			s.log.Warn("cannot keep the local copy; the fleet has the record", "key", key, "err", lerr)
		}
		return nil
	case lerr != nil:
		return lerr
	}
	// Peers decide from the shared copy: until this record reaches it, the
	// one there holds a refresh token this broker has spent. Share it the
	// moment the store answers again (run), not at the next claim.
	s.pending.Store(key, rec.Generation)
	s.log.Warn("shared store unreachable; the record is saved locally and shared when it answers", "key", key, "err", serr)
	return nil
}

// run repairs, every PushInterval until Close, the keys due (every local
// record at start), and offers the shared store each record it missed.
// The fence keeps whichever generation is newer.
func (s *Store) run(ctx context.Context) {
	defer close(s.done)
	keys, err := s.local.Keys()
	if err != nil {
		s.log.Warn("cannot list the local records to put them back into the shared store", "err", err)
	}
	for _, key := range keys {
		s.know(key)
	}
	t := time.NewTicker(s.every)
	defer t.Stop()
	for {
		s.repairDirty(ctx)
		s.pushPending(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.wake:
		}
	}
}

func (s *Store) pushPending(ctx context.Context) {
	s.pending.Range(func(k, gen any) bool {
		key := k.(string)
		rec, err := s.local.Load(ctx, key)
		if err == nil {
			err = s.shared.Save(ctx, key, rec)
		}
		switch {
		case err == nil:
			s.log.Info("shared a record saved only locally while the shared store failed", "key", key, "generation", rec.Generation)
		case !errors.Is(err, store.ErrStale):
			return false // still failing: try again at the next tick
		}
		s.pending.CompareAndDelete(key, gen) // unless a newer save missed it too
		return true
	})
}

// Lock implements store.Store with the shared lock.
func (s *Store) Lock(ctx context.Context, name string) (store.Lock, error) {
	return s.shared.Lock(ctx, name)
}

// Watch implements store.Store: it repairs what a peer changed, or every known
// key after a reconnection (Redis may have restarted empty), before fn
// reads it.
func (s *Store) Watch(ctx context.Context, fn func(key string)) error {
	return s.shared.Watch(ctx, func(key string) {
		if key == "" {
			s.known.Range(func(k, _ any) bool { s.dirty.Store(k, struct{}{}); return true })
			s.repairDirty(ctx)
		} else {
			s.repair(ctx, key)
		}
		fn(key)
	})
}

// Close stops the loop and closes both stores.
func (s *Store) Close() error {
	s.stop()
	<-s.done
	return errors.Join(s.shared.Close(), s.local.Close())
}
