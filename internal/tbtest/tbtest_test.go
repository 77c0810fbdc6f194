package tbtest

import (
	"net"
	"slices"
	"sync/atomic"
	"testing"
	"time"
)

// A Home's socket can be listened on, whatever the test's name: the
// reason ShortDir exists.
func TestHomeSocketListens(t *testing.T) {
	t.Run("a subtest name long enough to push t.TempDir past the 107 bytes a socket path may hold", func(t *testing.T) {
		h := NewHome(t)
		l, err := net.Listen("unix", h.Socket)
		if err != nil {
			t.Fatalf("listening on %s (%d bytes): %v", h.Socket, len(h.Socket), err)
		}
		l.Close()
	})
}

// Rehome moves the socket and the state dir and keeps everything else.
func TestRehome(t *testing.T) {
	a, b := NewHome(t), NewHome(t)
	env := a.Environ("TOKENBROKER_CREDENTIALS=x", "TOKENBROKER_X_CLIENT_ID=id")
	got := b.Rehome(env)
	want := []string{"TOKENBROKER_SOCKET=" + b.Socket, "TOKENBROKER_STATE_DIR=" + b.StateDir,
		"TOKENBROKER_CREDENTIALS=x", "TOKENBROKER_X_CLIENT_ID=id"}
	if !slices.Equal(got, want) {
		t.Errorf("Rehome = %q, want %q", got, want)
	}
	if env[0] != "TOKENBROKER_SOCKET="+a.Socket {
		t.Errorf("Rehome changed its argument: %q", env)
	}
}

func TestPoll(t *testing.T) {
	var n atomic.Int32
	if !poll(5*time.Second, func() bool { return n.Add(1) == 3 }) {
		t.Error("poll gave up on a condition that held at the third call")
	}
	if poll(20*time.Millisecond, func() bool { return false }) {
		t.Error("poll reported a condition that never held")
	}
}
