package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/api"
	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/internal/tbtest"
	"github.com/tokenbroker/tokenbroker/internal/tbtest/fakebroker"
	"github.com/tokenbroker/tokenbroker/sources"
)

// asClientEnv makes the test binary act as a socket client: it fetches
// the token named in the variable from the socket in asClientSocket and
// prints the status and the error code.
const (
	asClientEnv    = "TOKENBROKER_TEST_AS_CLIENT"
	asClientSocket = "TOKENBROKER_TEST_AS_CLIENT_SOCKET"
	asClientPath   = "TOKENBROKER_TEST_AS_CLIENT_PATH" // instead of the handout's
)

func TestMain(m *testing.M) {
	if name := os.Getenv(asClientEnv); name != "" {
		os.Exit(actAsClient(os.Getenv(asClientSocket), name))
	}
	os.Exit(m.Run())
}

func actAsClient(socket, name string) int {
	conn, err := net.Dial("unix", socket)
	if err != nil {
		fmt.Println("dial:", err)
		return 1
	}
	defer conn.Close()
	target := "/v1/tokens/" + name
	if p := os.Getenv(asClientPath); p != "" {
		target = p
	}
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: tokenbroker\r\nX-Tokenbroker: 1\r\nConnection: close\r\n\r\n", target)
	b, _ := io.ReadAll(conn)
	fmt.Print(string(b))
	return 0
}

// clientAsOthers prepares to run the test binary as a client under other
// users' ids: it skips unless root with setpriv, and returns setpriv's path,
// a short directory all may enter, and a copy of the binary in it that all
// may run.
func clientAsOthers(t *testing.T) (setpriv, dir, bin string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to run clients as other users with setpriv")
	}
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Skip("setpriv (util-linux) is not installed")
	}
	dir = tbtest.ShortDir(t)
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	self, _ := os.Executable()
	bin = filepath.Join(dir, "client")
	data, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	return setpriv, dir, bin
}

// The access rules, tested with processes that really run as other users
// (setpriv), so the kernel's SO_PEERCRED is what decides.
func TestAccessByPeerCredentials(t *testing.T) {
	setpriv, dir, bin := clientAsOthers(t)
	sock := filepath.Join(dir, "tb.sock")

	f := fakebroker.New()
	for _, n := range []string{"open", "byuid", "bygid", "nobody"} {
		f.Tokens[n] = broker.Handout{AccessToken: sources.NewSecret(fakebroker.SecretToken), Expiry: time.Now().Add(time.Hour)}
	}
	var logs tbtest.SyncBuffer
	opts := api.Options{Path: sock, Mode: 0o666, Logger: slog.New(slog.NewJSONHandler(&logs, nil)), Access: map[string]api.Access{
		"byuid":  {Set: true, UIDs: []uint32{1234}},
		"bygid":  {Set: true, GIDs: []uint32{2345}},
		"nobody": {Set: true},
	}}
	l, err := api.Listen(opts)
	if err != nil {
		t.Fatal(err)
	}
	s := api.NewServer(f, opts)
	go s.Serve(l)
	t.Cleanup(func() { _ = s.Shutdown(t.Context()) })

	type caller struct {
		desc             string
		uid, gid, groups string // setpriv's arguments
	}
	var (
		u1234      = caller{"uid 1234", "1234", "1234", ""}
		u1111g2345 = caller{"uid 1111, primary gid 2345", "1111", "2345", ""}
		u1112supp  = caller{"uid 1112, supplementary gid 2345", "1112", "1112", "2345"}
		u1113      = caller{"uid 1113, no listed group", "1113", "1113", "4444"}
	)
	cases := []struct {
		cred string
		who  caller
		want int
	}{
		{"open", u1113, 200},
		{"byuid", u1234, 200},
		{"byuid", u1113, 403},
		{"byuid", u1111g2345, 403},
		{"bygid", u1111g2345, 200},
		{"bygid", u1112supp, 200},
		{"bygid", u1113, 403},
		{"bygid", u1234, 403},
		{"nobody", u1234, 403},
	}
	for _, c := range cases {
		t.Run(c.cred+"/"+c.who.desc, func(t *testing.T) {
			args := []string{"--reuid=" + c.who.uid, "--regid=" + c.who.gid}
			if c.who.groups == "" {
				args = append(args, "--clear-groups")
			} else {
				args = append(args, "--groups="+c.who.groups)
			}
			cmd := exec.Command(setpriv, append(args, bin)...)
			cmd.Env = []string{asClientEnv + "=" + c.cred, asClientSocket + "=" + sock}
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("client as %s: %v\n%s", c.who.desc, err, out)
			}
			status := fmt.Sprintf("HTTP/1.1 %d ", c.want)
			if !strings.HasPrefix(string(out), status) {
				t.Fatalf("as %s: got\n%s\nwant %s", c.who.desc, out, status)
			}
			if c.want == 403 {
				if !strings.Contains(string(out), `"error":"access_denied"`) || strings.Contains(string(out), fakebroker.SecretToken) {
					t.Errorf("403 answer should be access_denied without the token:\n%s", out)
				}
			}
		})
	}
	// Root (this process) is always let in.
	if st, _ := fetch(t, sock, "nobody"); st != 200 {
		t.Errorf("root fetching a restricted credential: %d, want 200", st)
	}

	// One audit line per denial, naming the caller and its executable.
	var denials []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == "access denied" {
			denials = append(denials, m)
		}
	}
	want := 0
	for _, c := range cases {
		if c.want == 403 {
			want++
		}
	}
	if len(denials) != want {
		t.Fatalf("%d audit lines, want %d:\n%s", len(denials), want, logs.String())
	}
	for _, d := range denials {
		if d["uid"] == nil || d["gid"] == nil || d["pid"] == nil || d["credential"] == nil || d["exe"] != bin {
			t.Errorf("audit line lacks the caller's identity or executable (%s): %v", bin, d)
		}
	}
	if strings.Contains(logs.String(), fakebroker.SecretToken) {
		t.Error("the log holds the token")
	}
}

// fetch GETs a token over the socket as this process.
func fetch(t *testing.T, sock, name string) (int, string) {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{DialContext: func(context.Context, string, string) (net.Conn, error) {
		return net.Dial("unix", sock)
	}}}
	req, _ := http.NewRequest("GET", "http://tokenbroker/v1/tokens/"+name, nil)
	req.Header.Set("X-Tokenbroker", "1")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
