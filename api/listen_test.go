package api_test

import (
	"context"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tokenbroker/tokenbroker/api"
	"github.com/tokenbroker/tokenbroker/api/client"
	"github.com/tokenbroker/tokenbroker/internal/tbtest"
	"github.com/tokenbroker/tokenbroker/internal/tbtest/fakebroker"
)

func TestListenMode(t *testing.T) {
	for _, tc := range []struct {
		mode, want fs.FileMode
	}{{0, 0o660}, {0o600, 0o600}, {0o666, 0o666}} {
		p := tbtest.NewHome(t).Socket
		l, err := api.Listen(api.Options{Path: p, Mode: tc.mode})
		if err != nil {
			t.Fatalf("Listen: %v", err)
		}
		fi, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != tc.want {
			t.Errorf("Mode %o: socket is %v, want a socket with mode %o", tc.mode, fi.Mode(), tc.want)
		}
		if got := l.Addr().String(); got != p {
			t.Errorf("Addr = %q, want %q", got, p)
		}
		// Only the socket is left next to it: no temporary bind directory.
		if ents, _ := os.ReadDir(filepath.Dir(p)); len(ents) != 1 {
			t.Errorf("socket directory holds %d entries, want only the socket", len(ents))
		}
		l.Close()
	}
}

func TestListenCreatesDirectory(t *testing.T) {
	p := filepath.Join(filepath.Dir(tbtest.NewHome(t).Socket), "run", "tb.sock")
	l, err := api.Listen(api.Options{Path: p})
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	defer l.Close()
	fi, err := os.Stat(filepath.Dir(p))
	if err != nil || !fi.IsDir() || fi.Mode().Perm()&^0o755 != 0 {
		t.Errorf("socket directory: %v %v, want a directory with mode at most 0755", fi.Mode(), err)
	}
}

func TestListenReplacesStaleSocket(t *testing.T) {
	p := tbtest.NewHome(t).Socket
	stale, err := net.ListenUnix("unix", &net.UnixAddr{Name: p, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	stale.Close() // a dead broker's socket file stays behind
	if fi, err := os.Lstat(p); err != nil || fi.Mode().Type() != fs.ModeSocket {
		t.Fatalf("the stale socket is not there: %v", err)
	}
	serve(t, fakebroker.New(), p)
	c := client.New(p)
	defer c.Close()
	if tok, err := c.Token(context.Background(), "svc"); err != nil || tok.AccessToken != fakebroker.SecretToken {
		t.Errorf("Token over the new socket: %v", err)
	}
}

func TestListenLeavesLiveSocket(t *testing.T) {
	p := tbtest.NewHome(t).Socket
	live, err := net.Listen("unix", p)
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	l, err := api.Listen(api.Options{Path: p})
	if err == nil {
		l.Close()
		t.Fatal("Listen took over a live socket")
	}
	if want := "another broker is serving on " + p; !strings.Contains(err.Error(), want) {
		t.Errorf("error %q, want it to say %q", err, want)
	}
	// The live listener still owns the path.
	conn, err := net.Dial("unix", p)
	if err != nil {
		t.Fatalf("the live socket no longer answers: %v", err)
	}
	conn.Close()
	if c, err := live.Accept(); err != nil {
		t.Errorf("the live listener did not get the connection: %v", err)
	} else {
		c.Close()
	}
}

func TestListenRefusesNonSocket(t *testing.T) {
	for _, tc := range []struct {
		kind string
		make func(p string) error
	}{
		{"regular file", func(p string) error { return os.WriteFile(p, []byte("keep me"), 0o600) }},
		{"directory", func(p string) error { return os.Mkdir(p, 0o700) }},
		{"symbolic link", func(p string) error { return os.Symlink("/dev/null", p) }},
	} {
		t.Run(tc.kind, func(t *testing.T) {
			p := tbtest.NewHome(t).Socket
			if err := tc.make(p); err != nil {
				t.Fatal(err)
			}
			before, _ := os.Lstat(p)
			l, err := api.Listen(api.Options{Path: p})
			if err == nil {
				l.Close()
				t.Fatalf("Listen replaced a %s", tc.kind)
			}
			if !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), "not a socket") {
				t.Errorf("error %q, want it to name %s and say it is not a socket", err, p)
			}
			after, err := os.Lstat(p)
			if err != nil || !os.SameFile(before, after) || before.Size() != after.Size() {
				t.Errorf("the %s was touched", tc.kind)
			}
		})
	}
}

func TestListenRefusesWorldWritableDirectory(t *testing.T) {
	p := tbtest.NewHome(t).Socket
	dir := filepath.Dir(p)
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	if l, err := api.Listen(api.Options{Path: p}); err == nil {
		l.Close()
		t.Fatal("Listen accepted a directory anyone may write to")
	} else if !strings.Contains(err.Error(), dir) {
		t.Errorf("error %q does not name the directory", err)
	}
	// With the sticky bit (as /tmp has), others cannot replace our file.
	if err := os.Chmod(dir, 0o777|fs.ModeSticky); err != nil {
		t.Fatal(err)
	}
	l, err := api.Listen(api.Options{Path: p})
	if err != nil {
		t.Fatalf("Listen in a sticky directory: %v", err)
	}
	l.Close()
}

func TestListenRefusesLongPath(t *testing.T) {
	p := "/tmp/" + strings.Repeat("x", 120) + ".sock"
	if l, err := api.Listen(api.Options{Path: p}); err == nil {
		l.Close()
		t.Fatal("Listen accepted a path longer than sun_path")
	}
}

func TestCloseRemovesOnlyItsOwnSocket(t *testing.T) {
	p := tbtest.NewHome(t).Socket
	l, err := api.Listen(api.Options{Path: p})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket still there after Close: %v", err)
	}

	// A listener whose file was replaced (by a successor) leaves it alone.
	l, err = api.Listen(api.Options{Path: p})
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(p)
	other, err := net.Listen("unix", p)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	l.Close()
	if _, err := os.Lstat(p); err != nil {
		t.Errorf("Close removed another listener's socket: %v", err)
	}
}
