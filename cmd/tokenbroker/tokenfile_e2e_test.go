package main

import (
	"errors"
	"fmt"
	"github.com/tokenbroker/tokenbroker/internal/tbtest"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/sources/oauthtest"
)

// isTokenFileVar reports whether k is a TOKEN_FILE setting, which names a
// file the broker writes, unlike the _FILE settings that name secrets it
// reads (REFRESH_TOKEN_FILE among them).
func isTokenFileVar(k string) bool {
	return strings.HasSuffix(k, "_TOKEN_FILE") && !strings.HasSuffix(k, "_REFRESH_TOKEN_FILE")
}

// tokenFileReader is a shell loop that knows nothing of tokenbroker: it
// waits for the file, then calls the API with what the file holds for
// secs seconds, printing each status ("000" when curl could not send).
const tokenFileReader = `
while [ ! -s "$FILE" ]; do sleep 0.05; done
end=$(( $(date +%s) + SECS ))
while [ "$(date +%s)" -lt "$end" ]; do
	CALL
	sleep 0.05
done
`

// Programs that know nothing of tokenbroker read the token files, across
// several refreshes, and the API refuses none of their requests: curl -H
// @FILE with the header format, and a shell loop that puts the raw file
// into the header. A stop removes the files.
func TestTokenFileReaders(t *testing.T) {
	readmeNeedTool(t, "curl")
	// 4 s tokens refreshed at 40-50% of their life: a new token every 2 s,
	// while the floor (1 s before expiry) is 3 s away.
	p, environ, sock := e2eSetup(t, oauthtest.Options{AccessLifetime: 4 * time.Second, Rotate: true})
	dir := filepath.Join(filepath.Dir(sock), "tokens") // made by the broker
	header, raw := filepath.Join(dir, "firework.header"), filepath.Join(dir, "livepush")
	environ = append(environ, "TOKENBROKER_REFRESH_AT=0.5",
		"TOKENBROKER_FIREWORK_TOKEN_FILE="+header, "TOKENBROKER_FIREWORK_TOKEN_FILE_FORMAT=header",
		"TOKENBROKER_LIVEPUSH_TOKEN_FILE="+raw)
	logs := &tbtest.SyncBuffer{}
	d := startDaemon(t, environ, sock, logs)
	api := newBearerAPI(t, p)

	const secs = 9
	run := func(file, call string) (string, error) {
		script := strings.NewReplacer("SECS", fmt.Sprint(secs), "CALL", call).Replace(tokenFileReader)
		cmd := exec.Command("sh", "-c", script)
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "FILE=" + file, "API=" + api.URL}
		out, err := cmd.Output()
		return string(out), err
	}
	var wg sync.WaitGroup
	outs, errs := make([]string, 2), make([]error, 2)
	for i, c := range []struct{ file, call string }{
		{header, `curl -s -o /dev/null -w '%{http_code}\n' -H @"$FILE" "$API/v1/videos"`},
		{raw, `curl -s -o /dev/null -w '%{http_code}\n' -H "Authorization: Bearer $(cat "$FILE")" "$API/v1/videos"`},
	} {
		wg.Add(1)
		go func() { defer wg.Done(); outs[i], errs[i] = run(c.file, c.call) }()
	}
	wg.Wait()
	for i, out := range outs {
		lines := strings.Fields(out)
		ok := 0
		for _, l := range lines {
			if l == "200" {
				ok++
			}
		}
		if errs[i] != nil || ok == 0 || ok != len(lines) {
			t.Errorf("reader %d: %d of %d calls answered 200 (%v); want all:\n%s", i, ok, len(lines), errs[i], out)
		}
	}
	accepted, distinct, refused := api.counts()
	t.Logf("the API accepted %d calls with %d distinct tokens, refused %d", accepted, distinct, refused)
	if refused != 0 || distinct < 2*4 {
		t.Errorf("the API refused %d calls and saw %d distinct tokens; want 0 refused, and at least 4 refreshes of each credential in %d s", refused, distinct, secs)
	}
	for _, f := range []string{header, raw} {
		if fi, err := os.Stat(f); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v %v; want mode 0600", f, fi.Mode(), err)
		}
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("the directory the broker made: %v %v; want mode 0700", fi.Mode(), err)
	}

	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-d.done:
		d.done <- nil
	case <-time.After(20 * time.Second):
		t.Fatalf("the broker did not stop on SIGTERM\n%s", logs)
	}
	for _, f := range []string{header, raw} {
		if _, err := os.Stat(f); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s outlived the broker: %v", f, err)
		}
	}
}

// While the provider fails, the token file goes away when its token
// reaches the handout floor, rather than hold a token about to expire; it
// comes back with the next token. Every token a reader finds in it is
// valid at the provider.
func TestTokenFileRemovedWhileTheProviderFails(t *testing.T) {
	p, environ, sock := e2eSetup(t, oauthtest.Options{AccessLifetime: 4 * time.Second})
	file := filepath.Join(filepath.Dir(sock), "tokens", "ingest")
	environ = append(environ, "TOKENBROKER_REFRESH_AT=0.5", "TOKENBROKER_BACKOFF_MAX=2s", "TOKENBROKER_PROBE_INTERVAL=1s",
		"TOKENBROKER_INGEST_TOKEN_FILE="+file)
	logs := &tbtest.SyncBuffer{}
	startDaemon(t, environ, sock, logs)

	// read waits until the file's presence is want, checking every token
	// found on the way.
	read := func(want bool, within time.Duration) {
		t.Helper()
		deadline := time.Now().Add(within)
		for {
			b, err := os.ReadFile(file)
			switch {
			case err == nil && !p.Valid(strings.TrimSpace(string(b))):
				t.Fatalf("the file holds a token the provider refuses\n%s", logs)
			case (err == nil) == want:
				return
			case err != nil && !errors.Is(err, fs.ErrNotExist):
				t.Fatal(err)
			case time.Now().After(deadline):
				t.Fatalf("the file's presence is not %v after %s\n%s", want, within, logs)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	read(true, 10*time.Second)
	p.Inject(oauthtest.Fault{Dialect: oauthtest.Ingest, Status: 503, Times: 1 << 20})
	read(false, 10*time.Second) // the floor is 3 s after the last token's issue
	// The line follows the removal: wait for it, the file being gone first.
	tbtest.WaitForLog(t, logs, "the token reached the handout floor and no new one has come")
	p.ClearFaults()
	read(true, 30*time.Second)
}
