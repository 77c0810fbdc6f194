// Package tokenfile keeps credentials' current access tokens in files, for
// programs that can read a file but cannot ask the socket (a cron job, a
// vendor binary, curl -H @file).
//
// A file is replaced atomically (a temporary file in the same directory,
// fsync, rename, fsync of the directory) each time the broker hands out a
// new token, and removed when the token it holds reaches the handout floor
// with no successor, and when the writer stops: a reader finds either a
// whole token that handouts would still give out, or no file. It never
// truncates in place, so a reader never sees half a token or an empty one.
//
// It hears of tokens through broker.Options.Published and knows no
// provider, store or environment variable: cmd configures it.
package tokenfile

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tokenbroker/tokenbroker/api"
	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/broker/store/file"
)

// Format is how a file holds the token.
type Format string

// Formats.
const (
	Raw    Format = "raw"    // the bare token and a newline, as gcloud auth print-access-token prints it
	Header Format = "header" // "Authorization: Bearer TOKEN" and a newline, for curl -H @FILE
	JSON   Format = "json"   // the socket's answer; expires_in as of writing
)

// File is where and how one credential's token is kept.
type File struct {
	Path   string
	Format Format      // default Raw
	Mode   os.FileMode // default 0600; never group- or world-writable
	GID    int         // the file's group; -1 or 0 leaves the broker's
	// Signal, when not 0, is sent after each new token is written to the
	// process whose pid PIDFile holds (a reload signal).
	Signal  syscall.Signal
	PIDFile string
}

// retryWrite is how soon a failed write is tried again.
const retryWrite = 5 * time.Second

// Writer keeps the files of a set of credentials. Published is safe to
// call at any time; Run does the writing.
type Writer struct {
	log   *slog.Logger
	files map[string]*slot // by credential name
}

// slot is one credential's latest token and its file.
type slot struct {
	File
	name string
	wake chan struct{} // capacity 1: a new token is waiting

	mu    sync.Mutex
	h     broker.Handout
	until time.Time
	seq   uint64 // bumped by each Published
}

// New checks each file's directory, creating a missing one (0700, or 0750
// with the file's group), removes a file left by an earlier run (its token
// may be past the floor), and returns a Writer for files, keyed by
// credential name. Its error is an *Error.
func New(files map[string]File, log *slog.Logger) (*Writer, error) {
	if log == nil {
		log = slog.Default()
	}
	w := &Writer{log: log, files: map[string]*slot{}}
	for name, f := range files {
		if f.Format == "" {
			f.Format = Raw
		}
		if f.Mode == 0 {
			f.Mode = 0o600
		}
		if err := prepare(f); err != nil {
			return nil, &Error{Credential: name, Path: f.Path, Err: err}
		}
		w.files[name] = &slot{File: f, name: name, wake: make(chan struct{}, 1)}
	}
	return w, nil
}

// Error is a token file New refuses.
type Error struct {
	Credential, Path string
	Err              error
}

func (e *Error) Error() string {
	return fmt.Sprintf("credential %q: token file %s: %v", e.Credential, e.Path, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// prepare applies the state directory's rules to f's directory: created
// if missing, and refused when other users may write to it (they could
// replace the token). It also refuses a mode that would let them write the
// file, and removes a file left over.
func prepare(f File) error {
	switch {
	case !filepath.IsAbs(f.Path) || strings.HasSuffix(f.Path, "/"):
		return errors.New("is not an absolute path of a file; set one, e.g. /run/tokens/NAME")
	case f.Mode&^0o666 != 0 || f.Mode&0o022 != 0:
		return fmt.Errorf("mode %04o is not allowed: the file may not be writable by group or others, nor executable; use 0600, or 0640 with a group", f.Mode)
	}
	dir := filepath.Dir(f.Path)
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		mode := os.FileMode(0o700)
		if f.GID > 0 {
			mode = 0o750
		}
		if err := os.MkdirAll(dir, mode); err != nil {
			return fmt.Errorf("cannot create its directory: %w; create it (mode 0700) or choose another path", errors.Unwrap(err))
		}
		if f.GID > 0 {
			if err := os.Chown(dir, -1, f.GID); err != nil {
				return fmt.Errorf("cannot give its new directory %s group %d: %w; make the broker's user a member of that group", dir, f.GID, errors.Unwrap(err))
			}
			if err := os.Chmod(dir, mode); err != nil { // the umask may have cut it
				return err
			}
		}
	}
	fi, err := os.Stat(dir)
	switch {
	case err != nil:
		return fmt.Errorf("its directory: %w", err)
	case !fi.IsDir():
		return fmt.Errorf("%s is not a directory; choose a path in a directory", dir)
	case fi.Mode().Perm()&0o022 != 0:
		return fmt.Errorf("its directory %s has mode %04o: other users could replace the token; chmod 700 %s (750 to share it with a group), or use a directory of its own (a Kubernetes emptyDir is 0777: use a subdirectory of it)", dir, fi.Mode().Perm(), dir)
	}
	if fi, err := os.Lstat(f.Path); err == nil && fi.IsDir() {
		return errors.New("is a directory; set the path of a file in it")
	}
	if err := os.Remove(f.Path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("cannot remove the file an earlier run left: %w; the broker's user must be able to write to %s", errors.Unwrap(err), dir)
	}
	return nil
}

// Published records h as name's current token, handed out until until, and
// wakes its writer. It never blocks: it is broker.Options.Published.
func (w *Writer) Published(name string, h broker.Handout, until time.Time) {
	s := w.files[name]
	if s == nil {
		return
	}
	s.mu.Lock()
	s.h, s.until = h, until
	s.seq++
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default: // a wake is pending; the writer reads the latest
	}
}

// Run keeps the files until ctx ends, then removes them and returns.
func (w *Writer) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for _, s := range w.files {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.keep(ctx, s)
		}()
	}
	wg.Wait()
}

// keep writes each new token of s, and removes the file when its token
// reaches the floor with no successor, and when ctx ends.
func (w *Writer) keep(ctx context.Context, s *slot) {
	var written uint64      // the seq in the file
	var expire, retry timer // the floor of the token in the file; a failed write
	defer expire.stop()
	defer retry.stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			w.remove(s, "the broker is stopping")
			return
		case <-s.wake:
		case <-expire.c:
			expire.stop()
			w.remove(s, "the token reached the handout floor and no new one has come")
			continue
		case <-retry.c:
		}
		s.mu.Lock()
		h, until, seq := s.h, s.until, s.seq
		s.mu.Unlock()
		if seq == written {
			continue
		}
		retry.stop()
		if !time.Now().Before(until) {
			written = seq // a stored token past its floor, at start
			continue
		}
		err := s.write(h, until)
		if err != nil {
			if !failing {
				w.log.Error("cannot write the token file; retrying (the file keeps the previous token until its floor)",
					"credential", s.name, "path", s.Path, "err", err, "retry_in", retryWrite)
			}
			failing = true
			retry.set(retryWrite)
			continue
		}
		if failing {
			w.log.Info("token file written again", "credential", s.name, "path", s.Path)
			failing = false
		}
		written = seq
		expire.set(time.Until(until))
		if s.Signal != 0 {
			if err := signal(s.PIDFile, s.Signal); err != nil {
				w.log.Warn("cannot signal the reader of the token file", "credential", s.name, "pidfile", s.PIDFile, "signal", unix.SignalName(s.Signal), "err", err)
			}
		}
	}
}

func (w *Writer) remove(s *slot, why string) {
	err := os.Remove(s.Path)
	switch {
	case err == nil:
		w.log.Info("token file removed", "credential", s.name, "path", s.Path, "reason", why)
	case !errors.Is(err, fs.ErrNotExist):
		w.log.Error("cannot remove the token file", "credential", s.name, "path", s.Path, "err", err)
	}
}

// write replaces the file with h, atomically and durably, as the state
// dir's records are written.
func (s *slot) write(h broker.Handout, until time.Time) error {
	var buf []byte
	switch s.Format {
	case JSON:
		buf = api.AppendHandout(make([]byte, 0, 256), h, time.Now())
	case Header:
		buf = append(append([]byte("Authorization: Bearer "), h.AccessToken.Reveal()...), '\n')
	default:
		buf = append([]byte(h.AccessToken.Reveal()), '\n')
	}
	defer clear(buf)
	return file.Replace(s.Path, buf, func(f *os.File) error {
		if s.GID > 0 {
			if err := f.Chown(-1, s.GID); err != nil {
				return fmt.Errorf("giving it group %d: %w (the broker's user must be a member of that group)", s.GID, err)
			}
		}
		if err := f.Chmod(s.Mode); err != nil {
			return err
		}
		if !time.Now().Before(until) {
			return errors.New("the token reached the handout floor while it was written")
		}
		return nil
	})
}

// signal sends sig to the process whose pid the file at path holds. A pid
// file others may write is refused: they could aim the signal at any
// process of the broker's user.
func signal(path string, sig syscall.Signal) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if fi.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("%s has mode %04o: others could choose the process to signal; chmod 644 it", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	switch {
	case err != nil || len(b) > 32:
		return fmt.Errorf("%s does not hold a process id", path)
	case pid <= 0: // 0 and negatives would signal process groups
		return fmt.Errorf("%s holds %d, not a process id", path, pid)
	case pid == os.Getpid():
		return fmt.Errorf("%s holds the broker's own pid", path)
	}
	if err := syscall.Kill(pid, sig); err != nil {
		return fmt.Errorf("pid %d: %w", pid, err)
	}
	return nil
}

// timer is a stoppable time.Timer whose channel is nil while it is not set.
type timer struct {
	t *time.Timer
	c <-chan time.Time
}

func (t *timer) set(d time.Duration) {
	t.stop()
	t.t = time.NewTimer(d)
	t.c = t.t.C
}

func (t *timer) stop() {
	if t.t != nil {
		t.t.Stop()
		t.t, t.c = nil, nil
	}
}
