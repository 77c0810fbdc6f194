package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/api"
	"github.com/tokenbroker/tokenbroker/internal/tbtest"
	"github.com/tokenbroker/tokenbroker/sources/oauthtest"
)

// fileSecretEnviron configures one client_credentials credential whose
// client secret comes from a file, and returns the environment, the
// socket and the secret file.
func fileSecretEnviron(t *testing.T, p *oauthtest.Provider, secret string) ([]string, string, string) {
	t.Helper()
	h := tbtest.NewHome(t)
	file := filepath.Join(h.Dir, "fw.secret")
	writeSecretFile(t, file, secret)
	p.AddClient(oauthtest.Client{ID: "fw-app", Secret: secret, Scopes: []string{"videos:read"}, Dialect: oauthtest.Firework})
	return h.Environ(
		"TOKENBROKER_CREDENTIALS=fw",
		"TOKENBROKER_FW_PROVIDER=firework",
		"TOKENBROKER_FW_TOKEN_URL="+p.TokenURL(oauthtest.Firework),
		"TOKENBROKER_FW_CLIENT_ID=fw-app",
		"TOKENBROKER_FW_SCOPES=videos:read",
		"TOKENBROKER_FW_CLIENT_SECRET_FILE="+file,
	), h.Socket, file
}

// writeSecretFile replaces path the way Kubernetes updates a mounted
// secret: a new file renamed into place.
func writeSecretFile(t *testing.T, path, secret string) {
	t.Helper()
	tmp := path + ".new"
	if err := os.WriteFile(tmp, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// An operator rotates a _FILE client secret: the daemon re-reads it when
// the file changes, and on SIGHUP; a bad file changes nothing; handouts
// never fail and the token in hand is not refreshed early.
func TestSecretFileRotation(t *testing.T) {
	p := oauthtest.StartTest(t, oauthtest.Options{AccessLifetime: time.Hour})
	environ, sock, file := fileSecretEnviron(t, p, "secret-ONE-1111")
	logs := &tbtest.SyncBuffer{}
	d := startDaemon(t, environ, sock, logs)
	c := httpOver(sock)
	if st, h, _ := get(t, c, "/v1/tokens/fw"); st != 200 {
		t.Fatalf("first handout: %d %s", st, h.Description)
	}
	issued := p.Stats().Issued

	// The provider moves to a new secret; the operator updates the file.
	p.AddClient(oauthtest.Client{ID: "fw-app", Secret: "secret-TWO-2222", Scopes: []string{"videos:read"}, Dialect: oauthtest.Firework})
	writeSecretFile(t, file, "secret-TWO-2222")
	tbtest.WaitForLog(t, logs, "client secret reloaded")
	if got := p.Stats().Issued; got != issued {
		t.Errorf("a reload refreshed early: %d tokens issued, want none", got-issued)
	}
	if st, _, _ := get(t, c, "/v1/tokens/fw"); st != 200 {
		t.Errorf("handout after the reload: %d", st)
	}
	if err := refreshOver(c, "fw"); err != nil {
		t.Fatalf("a refresh with the reloaded secret: %v", err)
	}

	// A world-readable file is refused on SIGHUP; the secret in use stays.
	if err := os.Chmod(file, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	tbtest.WaitForLog(t, logs, "secret reload failed; the secrets in use are kept")
	time.Sleep(forcedRefreshCooldown)
	if err := refreshOver(c, "fw"); err != nil {
		t.Errorf("after a failed reload the secret in use should still work: %v", err)
	}
	for _, s := range []string{"secret-ONE-1111", "secret-TWO-2222"} {
		if strings.Contains(logs.String(), s) {
			t.Errorf("the log holds a client secret")
		}
	}
}

// forcedRefreshCooldown waits out the socket's limit on forced refreshes.
const forcedRefreshCooldown = api.RefreshCooldown + 100*time.Millisecond

func refreshOver(c *http.Client, name string) error {
	req, _ := http.NewRequest(http.MethodPost, "http://tokenbroker/v1/tokens/"+name+"/refresh", nil)
	req.Header.Set("X-Tokenbroker", "1")
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 204 {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("status %d: %s", resp.StatusCode, b)
	}
	return nil
}

// The daemon is not dumpable: no core file, and another process of its own
// user cannot read its memory or environment. Run as a non-root user so
// /proc shows it: a non-dumpable process's /proc files belong to root.
func TestDaemonIsNotDumpable(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run the daemon as another user")
	}
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Skip("setpriv is not installed")
	}
	const uid = 4321
	p := oauthtest.StartTest(t, oauthtest.Options{AccessLifetime: time.Hour})
	environ, sock, file := fileSecretEnviron(t, p, "secret-ONE-1111")
	dir := filepath.Dir(sock)
	for _, path := range []string{dir, file, filepath.Dir(binary), binary} {
		if err := os.Chown(path, uid, uid); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(filepath.Dir(binary), 0o755); err != nil {
		t.Fatal(err)
	}
	defer os.Chown(filepath.Dir(binary), 0, 0)
	logs := &tbtest.SyncBuffer{}
	cmd := exec.Command(setpriv, "--reuid="+strconv.Itoa(uid), "--regid="+strconv.Itoa(uid), "--clear-groups", binary, "serve")
	cmd.Env = append(environ, "TOKENBROKER_LOG_FORMAT=json", "HOME="+dir)
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	tbtest.WaitForLog(t, logs, "tokenbroker serving")
	fi, err := os.Stat(fmt.Sprintf("/proc/%d/environ", cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	if owner := fi.Sys().(*syscall.Stat_t).Uid; owner != 0 {
		t.Errorf("/proc/PID/environ of the daemon (uid %d) belongs to uid %d; want 0 (not dumpable)", uid, owner)
	}
}
