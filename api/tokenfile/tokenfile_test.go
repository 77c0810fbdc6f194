package tokenfile

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/sources"
)

var quiet = slog.New(slog.DiscardHandler)

// start runs a Writer for files until the test ends, and returns it and a
// stop that waits for it to finish.
func start(t *testing.T, files map[string]File) (*Writer, func()) {
	t.Helper()
	w, err := New(files, quiet)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.Run(ctx); close(done) }()
	stop := func() { cancel(); <-done }
	t.Cleanup(stop)
	return w, stop
}

func handout(tok string, life time.Duration) broker.Handout {
	return broker.Handout{AccessToken: sources.NewSecret(tok), Expiry: time.Now().Add(life)}
}

// waitFor polls path until it holds want ("" means: until it is gone).
func waitFor(t *testing.T, path, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, err := os.ReadFile(path)
		switch {
		case want == "" && errors.Is(err, fs.ErrNotExist):
			return
		case want != "" && err == nil && string(b) == want:
			return
		case time.Now().After(deadline):
			t.Fatalf("%s holds %q (%v); want %q", path, b, err, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Each format holds what it says, with the mode asked for, and a new token
// replaces the file (a new inode: renamed over, not rewritten), leaving no
// temporary file behind.
func TestFormats(t *testing.T) {
	dir := t.TempDir()
	files := map[string]File{
		"raw":    {Path: filepath.Join(dir, "raw")},
		"header": {Path: filepath.Join(dir, "header"), Format: Header, Mode: 0o640},
		"json":   {Path: filepath.Join(dir, "json"), Format: JSON, Mode: 0o400},
	}
	w, _ := start(t, files)
	h := handout("tok-1", time.Hour)
	for name := range files {
		w.Published(name, h, h.Expiry.Add(-time.Minute))
	}
	waitFor(t, files["raw"].Path, "tok-1\n")
	waitFor(t, files["header"].Path, "Authorization: Bearer tok-1\n")
	deadline := time.Now().Add(10 * time.Second)
	var got struct {
		AccessToken string `json:"access_token"`
		TokenType   string `json:"token_type"`
		ExpiresIn   int    `json:"expires_in"`
		ExpiresAt   string `json:"expires_at"`
	}
	for {
		b, err := os.ReadFile(files["json"].Path)
		if err == nil && json.Unmarshal(b, &got) == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("json: %q %v", b, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if got.AccessToken != "tok-1" || got.TokenType != "Bearer" || got.ExpiresIn < 3590 || got.ExpiresAt != h.Expiry.UTC().Format(time.RFC3339) {
		t.Errorf("json holds %+v; want the socket's answer for tok-1", got)
	}
	for name, want := range map[string]os.FileMode{"raw": 0o600, "header": 0o640, "json": 0o400} {
		fi, err := os.Stat(files[name].Path)
		if err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v, %v; want %04o", name, fi.Mode().Perm(), err, want)
		}
	}

	before, _ := os.Stat(files["raw"].Path)
	h2 := handout("tok-2", time.Hour)
	w.Published("raw", h2, h2.Expiry.Add(-time.Minute))
	waitFor(t, files["raw"].Path, "tok-2\n")
	after, _ := os.Stat(files["raw"].Path)
	if os.SameFile(before, after) {
		t.Error("the file was rewritten in place; want a new file renamed over it")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 3 {
		t.Errorf("the directory holds %d entries; want the 3 files and no temporary one", len(entries))
	}
}

// A token is removed when it reaches the handout floor with no successor,
// one already past the floor is never written, and stopping removes the
// file.
func TestRemovedAtTheFloor(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tok")
	w, stop := start(t, map[string]File{"fw": {Path: path}})
	h := handout("short", time.Hour)
	until := time.Now().Add(300 * time.Millisecond)
	w.Published("fw", h, until)
	waitFor(t, path, "short\n")
	waitFor(t, path, "")
	if late := time.Since(until); late < 0 {
		t.Errorf("removed %v before the floor", -late)
	}

	w.Published("fw", handout("stale", time.Second), time.Now().Add(-time.Millisecond))
	w.Published("other", handout("nobody's", time.Hour), time.Now().Add(time.Hour)) // no file: ignored
	time.Sleep(50 * time.Millisecond)
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a token past its floor was written: %v", err)
	}

	w.Published("fw", handout("kept", time.Hour), time.Now().Add(time.Hour))
	waitFor(t, path, "kept\n")
	stop()
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the file outlived the writer: %v", err)
	}
}

// A reader racing the writer sees a whole token it was given, or no file;
// never an empty, partial or mixed one.
func TestReadersSeeWholeTokens(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tok")
	w, _ := start(t, map[string]File{"fw": {Path: path}})
	var mu sync.Mutex
	issued := map[string]bool{}
	done := make(chan struct{})
	var bad []string
	reads := 0
	go func() {
		defer close(done)
		for range 20000 {
			b, err := os.ReadFile(path)
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			reads++
			mu.Lock()
			ok := err == nil && strings.HasSuffix(string(b), "\n") && issued[strings.TrimSuffix(string(b), "\n")]
			mu.Unlock()
			if !ok {
				bad = append(bad, fmt.Sprintf("%q %v", b, err))
			}
		}
	}()
	for i := 0; ; i++ {
		select {
		case <-done:
			if len(bad) > 0 || reads == 0 {
				t.Errorf("%d reads; %d saw something not issued, e.g. %v", reads, len(bad), bad[:min(len(bad), 3)])
			}
			return
		default:
		}
		tok := fmt.Sprintf("token-%d-%s", i, strings.Repeat("x", i%97))
		mu.Lock()
		issued[tok] = true
		mu.Unlock()
		w.Published("fw", handout(tok, time.Hour), time.Now().Add(time.Hour))
		time.Sleep(200 * time.Microsecond)
	}
}

// The directory's rules are the state directory's: created when missing,
// refused when others may write to it; a mode that lets others write, or a
// directory at the path, is refused; a file an earlier run left is removed.
func TestPrepare(t *testing.T) {
	dir := t.TempDir()
	open := filepath.Join(dir, "open")
	if err := os.Mkdir(open, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o777); err != nil { // past the umask
		t.Fatal(err)
	}
	for _, tc := range []struct {
		f    File
		want string
	}{
		{File{Path: filepath.Join(open, "tok"), Mode: 0o600}, "other users could replace the token; chmod 700"},
		{File{Path: filepath.Join(dir, "tok"), Mode: 0o660}, "mode 0660 is not allowed"},
		{File{Path: filepath.Join(dir, "tok"), Mode: 0o700}, "mode 0700 is not allowed"},
		{File{Path: "tok", Mode: 0o600}, "is not an absolute path"},
		{File{Path: dir, Mode: 0o600}, "is a directory"},
	} {
		_, err := New(map[string]File{"fw": tc.f}, quiet)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), `credential "fw"`) {
			t.Errorf("%+v: %v; want an error naming the credential that says %q", tc.f, err, tc.want)
		}
	}

	made := filepath.Join(dir, "new", "deeper", "tok")
	if _, err := New(map[string]File{"fw": {Path: made}}, quiet); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Dir(made)); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("the missing directory was made %v (%v); want 0700", fi.Mode().Perm(), err)
	}
	left := filepath.Join(dir, "left")
	if err := os.WriteFile(left, []byte("old-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := New(map[string]File{"fw": {Path: left}}, quiet); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(left); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a file an earlier run left is still there: %v", err)
	}
}

// After each new token the process the pid file names gets the signal.
func TestSignal(t *testing.T) {
	dir := t.TempDir()
	pidfile, got := filepath.Join(dir, "reader.pid"), filepath.Join(dir, "got")
	ready := filepath.Join(dir, "ready")
	cmd := exec.Command("sh", "-c", `trap 'echo hup >> "$GOT"' HUP; echo $$ > "$PIDFILE"; : > "$READY"; while :; do sleep 0.02; done`)
	cmd.Env = append(os.Environ(), "GOT="+got, "PIDFILE="+pidfile, "READY="+ready)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(ready); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the reader did not start")
		}
		time.Sleep(5 * time.Millisecond)
	}
	path := filepath.Join(dir, "tok")
	w, _ := start(t, map[string]File{"fw": {Path: path, Signal: syscall.SIGHUP, PIDFile: pidfile}})
	for i, want := range []string{"hup\n", "hup\nhup\n"} {
		w.Published("fw", handout(fmt.Sprint("t", i), time.Hour), time.Now().Add(time.Hour))
		waitFor(t, got, want)
	}
	if err := signal(pidfile, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, got, "hup\nhup\nhup\n")

	// A pid file others may write, or one naming no process, is refused.
	if err := os.Chmod(pidfile, 0o666); err != nil {
		t.Fatal(err)
	}
	if err := signal(pidfile, syscall.SIGHUP); err == nil || !strings.Contains(err.Error(), "others could choose the process") {
		t.Errorf("a world-writable pid file: %v", err)
	}
	for _, content := range []string{"0", "-1", "x", fmt.Sprint(os.Getpid())} {
		bad := filepath.Join(dir, "bad.pid")
		if err := os.WriteFile(bad, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := signal(bad, syscall.SIGHUP); err == nil {
			t.Errorf("pid file holding %q: signalled", content)
		}
	}
}
