package tbtest

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// SyncBuffer is a bytes.Buffer safe for concurrent use: a log sink for a
// broker's goroutines, or a daemon's stdout and stderr, that a test reads
// while they write.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write implements io.Writer.
func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns everything written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// WaitFor polls cond until it holds, and fails the test if it does not
// within the given time; what names the condition in the failure.
func WaitFor(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	if !poll(within, cond) {
		t.Fatalf("timed out after %v waiting for %s", within, what)
	}
}

// WaitForLog waits up to 15 s (a daemon built with -race on a busy
// machine) until logs holds want, and fails the test with the logs if not.
func WaitForLog(t testing.TB, logs *SyncBuffer, want string) {
	t.Helper()
	if !poll(15*time.Second, func() bool { return strings.Contains(logs.String(), want) }) {
		t.Fatalf("the log never said %q:\n%s", want, logs)
	}
}

// poll reports whether cond held within the given time. It polls from a
// millisecond on, backing off to 50 ms: quick conditions cost no sleep,
// slow ones little CPU.
func poll(within time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(within)
	for pause := time.Millisecond; !cond(); pause = min(2*pause, 50*time.Millisecond) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(pause)
	}
	return true
}

// ShortDir returns a new directory removed when the test ends. Its path is
// short (/tmp/tb123...): a Unix socket path holds at most 107 bytes, which
// t.TempDir, named after the test, can pass.
func ShortDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "tb")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// Home is where one daemon under test keeps its socket and its state: a
// ShortDir of its own, so that daemons of a fleet never share either.
type Home struct {
	Dir      string
	Socket   string // Dir/tb.sock
	StateDir string // Dir/state
}

// NewHome returns a Home in a new ShortDir.
func NewHome(t testing.TB) Home {
	t.Helper()
	dir := ShortDir(t)
	return Home{Dir: dir, Socket: filepath.Join(dir, "tb.sock"), StateDir: filepath.Join(dir, "state")}
}

// Environ returns the variables that put a daemon's socket and state in
// h, followed by kv ("TOKENBROKER_X=v" entries).
func (h Home) Environ(kv ...string) []string {
	return append([]string{"TOKENBROKER_SOCKET=" + h.Socket, "TOKENBROKER_STATE_DIR=" + h.StateDir}, kv...)
}

// Rehome returns environ with its socket and state dir moved into h: the
// configuration of another daemon of the same fleet.
func (h Home) Rehome(environ []string) []string {
	out := make([]string, 0, len(environ))
	for _, kv := range environ {
		switch {
		case strings.HasPrefix(kv, "TOKENBROKER_SOCKET="):
			kv = "TOKENBROKER_SOCKET=" + h.Socket
		case strings.HasPrefix(kv, "TOKENBROKER_STATE_DIR="):
			kv = "TOKENBROKER_STATE_DIR=" + h.StateDir
		}
		out = append(out, kv)
	}
	return out
}
