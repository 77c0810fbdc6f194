// Package file is the embedded durable store: one file per credential in
// a state directory.
package file

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/tokenbroker/tokenbroker/broker/store"
	"github.com/tokenbroker/tokenbroker/broker/store/seal"
)

var _ store.Store = (*Store)(nil)

// Store is the embedded durable store: one file per credential in a
// state directory, written with write-to-temp, fsync, rename and a directory
// fsync, mode 0600. One broker owns a directory at a time (flock).
type Store struct {
	// Sealer encrypts records; nil stores them in plaintext. Set it before
	// the store is used.
	Sealer *seal.Sealer

	dir  string
	lock *os.File
	mu   sync.Mutex // serialises Save's read-compare-write
}

// Open opens (creating, mode 0700) the state directory dir and takes
// its lock.
func Open(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("state dir %s: %w (set TOKENBROKER_STATE_DIR to a writable directory)", dir, err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("state dir %s: %w", dir, err)
	}
	// Files are 0600, so a readable directory leaks nothing; a writable one
	// would let another user swap a record.
	if fi.Mode().Perm()&0o022 != 0 {
		return nil, fmt.Errorf("state dir %s has mode %o: other users could replace stored tokens (chmod 700 %s)", dir, fi.Mode().Perm(), dir)
	}
	f, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("state dir %s: %w", dir, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		pid, _ := os.ReadFile(f.Name())
		f.Close()
		return nil, fmt.Errorf("state dir %s is in use by another broker (pid %s): give each broker its own TOKENBROKER_STATE_DIR", dir, strings.TrimSpace(string(pid)))
	}
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return &Store{dir: dir, lock: f}, nil
}

func (s *Store) path(key string) (string, error) {
	if key == "" || strings.ContainsAny(key, `/\`) || strings.HasPrefix(key, ".") {
		return "", fmt.Errorf("invalid store key %q", key)
	}
	return filepath.Join(s.dir, key+".json"), nil
}

// Load implements store.Store.
func (s *Store) Load(_ context.Context, key string) (store.Record, error) {
	p, err := s.path(key)
	if err != nil {
		return store.Record{}, err
	}
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return store.Record{}, store.ErrNotFound
	}
	if err != nil {
		return store.Record{}, err
	}
	r, err := s.Sealer.Decode(key, b)
	if err != nil {
		return store.Record{}, fmt.Errorf("%s: %w", p, err)
	}
	return r, nil
}

// Save writes rec unless the same or a higher generation is stored
// (store.ErrStale); when it returns nil the record survives a crash.
func (s *Store) Save(ctx context.Context, key string, rec store.Record) error {
	p, err := s.path(key)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch old, err := s.Load(ctx, key); {
	case err == nil && old.Generation >= rec.Generation:
		return store.ErrStale
	case errors.Is(err, store.ErrUnknownKey):
		return err // another key can still read it: never overwrite
	case err != nil && !errors.Is(err, store.ErrNotFound):
		// A corrupt record is replaced: the new one is what counts.
	}
	return Replace(p, s.Sealer.Encode(key, rec), nil)
}

// Replace replaces the file at path with data, atomically and durably: a
// temporary file in the same directory (mode 0600), ready (when not nil)
// to set its owner and mode, fsync, rename, and an fsync of the directory.
// A reader sees the old content or the new, never a mix.
func Replace(path string, data []byte, ready func(*os.File) error) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after the rename
	_, err = f.Write(data)
	if err == nil && ready != nil {
		err = ready(f)
	}
	if err == nil {
		err = f.Sync()
	}
	if err = errors.Join(err, f.Close()); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Acquire implements store.Store: one process owns the directory, and the broker
// already runs one refresh per credential at a time, so the claim is the
// directory's lock.
func (s *Store) Acquire(ctx context.Context, key string, _ store.Mode) (store.Claim, error) {
	rec, err := s.Load(ctx, key)
	return store.NewClaim(store.HeldLock, rec, err, func(ctx context.Context, rec store.Record) error { return s.Save(ctx, key, rec) }), nil
}

// Lock implements store.Store: this process holds every lock of its directory.
func (s *Store) Lock(context.Context, string) (store.Lock, error) { return store.HeldLock, nil }

// Watch implements store.Store: no other process writes the directory.
func (s *Store) Watch(context.Context, func(string)) error { return nil }

// Keys lists the keys that have a record.
func (s *Store) Keys() ([]string, error) {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, err
	}
	var keys []string
	for _, e := range entries {
		k, ok := strings.CutSuffix(e.Name(), ".json")
		if _, err := s.path(k); ok && err == nil && e.Type().IsRegular() {
			keys = append(keys, k)
		}
	}
	return keys, nil
}

// Close releases the directory lock.
func (s *Store) Close() error { return s.lock.Close() }
