package api

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/tokenbroker/tokenbroker/api/client"
)

// MaxSocketPath is the longest path a Unix socket address holds (sun_path
// is 108 bytes with its terminating NUL).
const MaxSocketPath = 107

// Listen creates the socket at opts.Path (default client.DefaultSocket())
// with mode opts.Mode (default 0660) and listens on it.
//
// It creates the socket's directory (mode 0755) when missing, and refuses a
// directory that another user (other than root) owns or that anyone may
// write to without the sticky bit: whoever controls the directory can
// replace the socket. A socket already at the path is replaced only when
// nobody answers on it (a dead broker's); a live one is left alone with an
// error, and so is anything at the path that is not a socket.
//
// The socket is never reachable with a wider mode than asked: chmod after
// bind leaves a window in which the mode comes from the umask, and setting
// the umask is process-wide and races with other goroutines creating files.
// So the socket is bound inside a fresh private (0700) directory next to
// the path, chmod-ed there, and then hard-linked into place, which also
// fails rather than replace a socket another broker created meanwhile.
//
// Closing the listener (Server.Shutdown does) removes the socket file, if it
// is still this listener's.
func Listen(opts Options) (net.Listener, error) {
	path := opts.Path
	if path == "" {
		path = client.DefaultSocket()
	}
	mode := opts.Mode.Perm()
	if mode == 0 {
		mode = DefaultMode
	}
	if len(path) > MaxSocketPath {
		return nil, fmt.Errorf("socket path %s is %d bytes, longer than the %d a Unix socket allows: choose a shorter one (%s)",
			path, len(path), MaxSocketPath, client.SocketEnv)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("socket directory: %w (set %s to a path in a writable directory)", err, client.SocketEnv)
	}
	if err := checkDir(dir); err != nil {
		return nil, err
	}
	if err := clearStale(path); err != nil {
		return nil, err
	}

	priv, err := os.MkdirTemp(dir, ".tb")
	if err != nil {
		return nil, fmt.Errorf("socket directory: %w", err)
	}
	defer os.RemoveAll(priv) // holds only the bind name, linked elsewhere by then
	tmp := filepath.Join(priv, "s")
	if len(tmp) > MaxSocketPath {
		return nil, fmt.Errorf("socket directory %s is too long to bind in (%d bytes with the temporary name, the limit is %d): choose a shorter path (%s)",
			dir, len(tmp), MaxSocketPath, client.SocketEnv)
	}
	ul, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	// The bind name goes with priv; Close removes the real path itself.
	ul.SetUnlinkOnClose(false)
	if opts.GID > 0 {
		if err := os.Lchown(tmp, -1, opts.GID); err != nil {
			ul.Close()
			return nil, fmt.Errorf("socket %s: giving it group %d: %w (the broker's user must belong to that group; check TOKENBROKER_SOCKET_GROUP)", path, opts.GID, err)
		}
	}
	if err := os.Chmod(tmp, mode); err != nil {
		ul.Close()
		return nil, fmt.Errorf("socket %s: %w", path, err)
	}
	if err := os.Link(tmp, path); err != nil {
		ul.Close()
		if errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("another broker is serving on %s: it appeared while this one started", path)
		}
		return nil, fmt.Errorf("socket %s: %w", path, err)
	}
	fi, err := os.Lstat(path)
	if err != nil {
		ul.Close()
		return nil, fmt.Errorf("socket %s: %w", path, err)
	}
	return &socketListener{ul: ul, addr: &net.UnixAddr{Name: path, Net: "unix"}, fi: fi}, nil
}

// checkDir refuses a socket directory that someone else could use to
// replace the socket.
func checkDir(dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("socket directory: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("socket directory %s is not a directory", dir)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		if uid := int(st.Uid); uid != os.Geteuid() && uid != 0 {
			return fmt.Errorf("socket directory %s belongs to uid %d, not to this user (%d) or root: its owner could replace the socket; use a directory of your own (%s)",
				dir, uid, os.Geteuid(), client.SocketEnv)
		}
	}
	if fi.Mode().Perm()&0o002 != 0 && fi.Mode()&fs.ModeSticky == 0 {
		return fmt.Errorf("socket directory %s is writable by everyone: anyone could replace the socket; use another directory or chmod o-w %s",
			dir, dir)
	}
	return nil
}

// clearStale makes room at path: nothing there, or a socket nobody answers
// on, which it removes. A live socket or any other file is an error.
func clearStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("socket %s: %w", path, err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("%s exists and is %s, not a socket: refusing to replace it; remove it or set %s to another path",
			path, kind(fi.Mode()), client.SocketEnv)
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("another broker is serving on %s: stop it first, or give this one another socket (%s)",
			path, client.SocketEnv)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		// Busy, or not ours to probe: not provably dead, so not ours to remove.
		return fmt.Errorf("socket %s exists and cannot be probed (%w): refusing to replace it", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing the stale socket %s: %w", path, err)
	}
	return nil
}

// socketListener is a Unix listener whose Close removes its socket file,
// unless another broker has replaced the file since.
type socketListener struct {
	ul   *net.UnixListener
	addr *net.UnixAddr
	fi   fs.FileInfo // the socket file, to recognise it at Close

	once sync.Once
	err  error
}

func (l *socketListener) Accept() (net.Conn, error) { return l.ul.Accept() }
func (l *socketListener) Addr() net.Addr            { return l.addr }

func (l *socketListener) Close() error {
	l.once.Do(func() {
		l.err = l.ul.Close()
		if fi, err := os.Lstat(l.addr.Name); err == nil && os.SameFile(fi, l.fi) {
			_ = os.Remove(l.addr.Name)
		}
	})
	return l.err
}

// kind names a file type for an error message.
func kind(m fs.FileMode) string {
	switch m.Type() {
	case 0:
		return "a regular file"
	case fs.ModeDir:
		return "a directory"
	case fs.ModeSymlink:
		return "a symbolic link"
	case fs.ModeNamedPipe:
		return "a named pipe"
	default:
		return "a special file"
	}
}
