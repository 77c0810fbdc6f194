package client

import (
	"os"
	"path/filepath"
	"strconv"
)

// SocketEnv names the environment variable that overrides the socket path.
const SocketEnv = "TOKENBROKER_SOCKET"

// socketName is the file name of the socket inside its directory.
const socketName = "tokenbroker.sock"

// DefaultSocket returns the socket path the broker and its clients agree on
// when nothing else is configured: $TOKENBROKER_SOCKET when set; else
// /run/tokenbroker/tokenbroker.sock for root; else
// $XDG_RUNTIME_DIR/tokenbroker/tokenbroker.sock; else
// /tmp/tokenbroker-$UID/tokenbroker.sock.
func DefaultSocket() string {
	if p := os.Getenv(SocketEnv); p != "" {
		return p
	}
	return SocketFor(os.Geteuid(), os.Getenv)
}

// SocketFor is the default socket path of user uid when TOKENBROKER_SOCKET
// is unset, reading XDG_RUNTIME_DIR through getenv. The broker and its
// clients both use it, so they agree.
func SocketFor(uid int, getenv func(string) string) string {
	if uid == 0 {
		return "/run/tokenbroker/" + socketName
	}
	// A relative XDG path is ignored, as the XDG spec says.
	if d := getenv("XDG_RUNTIME_DIR"); filepath.IsAbs(d) {
		return filepath.Join(d, "tokenbroker", socketName)
	}
	// Literally /tmp, not os.TempDir: a client with another $TMPDIR must
	// still find the broker.
	return filepath.Join("/tmp", "tokenbroker-"+strconv.Itoa(uid), socketName)
}
