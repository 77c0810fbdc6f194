package broker

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"
)

// FleetStore shares records through Shared (Redis) and keeps a durable copy
// of every record it sees in Local (the state dir). Shared decides: its lock
// and its fence. Local makes a whole-fleet restart over an empty Redis lose
// nothing, and repairs Shared: a Load that finds Shared empty or older puts
// back the local record, and the fence keeps the highest generation.
type FleetStore struct {
	Local  Store
	Shared Store
	Logger *slog.Logger // default slog.Default()
	// CrashPoint is called with CrashBetweenStores after the shared write,
	// for crash tests only.
	CrashPoint func(step string)
	// SettleTime is how long a refresh waits after this broker put a local
	// record back into the shared store (see Settler). Default 2s: after an
	// outage a peer may need ~1.3s to answer (go-redis probes a server it
	// gave up on once a second, the watch resubscribes within 250ms).
	SettleTime time.Duration
	// PushInterval is how often records saved only locally, while the
	// shared store failed, are offered to it again. Default 100ms.
	PushInterval time.Duration

	putBack sync.Map // key -> time.Time of the last put-back
	pending sync.Map // key -> generation saved locally, not yet shared
}

// Settle implements Settler. Peers answer a put-back through the store's
// event: each reads the shared record, and one holding a newer generation
// writes that back, which the fence lets through.
func (s *FleetStore) Settle(ctx context.Context, key string) (bool, error) {
	v, ok := s.putBack.LoadAndDelete(key)
	if !ok {
		return false, nil
	}
	settle := s.SettleTime
	if settle <= 0 {
		settle = 2 * time.Second
	}
	wait := time.Until(v.(time.Time).Add(settle))
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

func (s *FleetStore) log() *slog.Logger {
	if s.Logger == nil {
		return slog.Default()
	}
	return s.Logger
}

// Load implements Store.
func (s *FleetStore) Load(ctx context.Context, key string) (Record, error) {
	shared, serr := s.Shared.Load(ctx, key)
	local, lerr := s.Local.Load(ctx, key)
	switch {
	case serr == nil && (lerr != nil || shared.Generation > local.Generation):
		// Keep the local copy up with the fleet, so this broker restarts
		// from the newest record even if Redis comes back empty.
		if err := s.Local.Save(ctx, key, shared); err != nil && !errors.Is(err, ErrStale) {
			s.log().Warn("cannot keep the local copy", "key", key, "err", err)
		}
		return shared, nil
	case lerr == nil:
		if serr == nil || errors.Is(serr, ErrNotFound) || errors.Is(serr, ErrCorrupt) {
			if err := s.Shared.Save(ctx, key, local); err == nil {
				s.pending.Delete(key)
				s.putBack.Store(key, time.Now())
				s.log().Info("put the local record back into the shared store", "key", key, "generation", local.Generation)
			}
		}
		return local, nil
	case errors.Is(lerr, ErrNotFound) && serr != nil && !errors.Is(serr, ErrNotFound):
		return Record{}, serr
	}
	return Record{}, lerr
}

// Save implements Store: the shared copy first, then the local one. In
// that order a broker that dies between the two writes leaves the fleet the
// new record (a peer never spends a refresh token this broker already
// spent), and itself adopts it on restart, since Load takes the newer
// generation. A shared store that is unreachable does not fail the save:
// the record is durable here and the next Load puts it back. Its fence
// does.
func (s *FleetStore) Save(ctx context.Context, key string, rec Record) error {
	serr := s.Shared.Save(ctx, key, rec)
	if errors.Is(serr, ErrStale) {
		return ErrStale
	}
	if serr == nil && s.CrashPoint != nil {
		s.CrashPoint(CrashBetweenStores)
	}
	lerr := s.Local.Save(ctx, key, rec)
	switch {
	case serr == nil:
		s.pending.Delete(key)
		if lerr != nil && !errors.Is(lerr, ErrStale) {
			s.log().Warn("cannot keep the local copy; the fleet has the record", "key", key, "err", lerr)
		}
		return nil
	case lerr != nil:
		return lerr
	}
	// Peers decide from the shared copy: until this record reaches it, the
	// one there holds a refresh token this broker has spent. Share it the
	// moment the store answers again (pushPending), not at the next Load.
	s.pending.Store(key, rec.Generation)
	s.log().Warn("shared store unreachable; the record is saved locally and shared when it answers", "key", key, "err", serr)
	return nil
}

// pushPending offers the shared store, every PushInterval until ctx ends,
// each record it missed. The fence keeps whichever generation is newer.
func (s *FleetStore) pushPending(ctx context.Context) {
	every := s.PushInterval
	if every <= 0 {
		every = 100 * time.Millisecond
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.pending.Range(func(k, gen any) bool {
			key := k.(string)
			rec, err := s.Local.Load(ctx, key)
			if err == nil {
				err = s.Shared.Save(ctx, key, rec)
			}
			switch {
			case err == nil:
				s.log().Info("shared a record saved only locally while the shared store failed", "key", key, "generation", rec.Generation)
			case !errors.Is(err, ErrStale):
				return false // still failing: try again at the next tick
			}
			s.pending.CompareAndDelete(key, gen) // unless a newer save missed it too
			return true
		})
	}
}

// Lock implements Store with the shared lock.
func (s *FleetStore) Lock(ctx context.Context, key string) (Lease, error) {
	return s.Shared.Lock(ctx, key)
}

// Watch implements Watcher when the shared store does, and meanwhile
// shares the records the shared store missed (pushPending).
func (s *FleetStore) Watch(ctx context.Context, fn func(key string)) error {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); s.pushPending(ctx) }()
	defer func() { cancel(); <-done }()
	w, ok := s.Shared.(Watcher)
	if !ok {
		<-ctx.Done()
		return nil
	}
	return w.Watch(ctx, fn)
}

// Close closes both stores.
func (s *FleetStore) Close() error {
	return errors.Join(s.Shared.Close(), s.Local.Close())
}
