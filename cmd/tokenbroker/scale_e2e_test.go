package main

import (
	"bufio"
	"cmp"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/internal/tbtest"
	"github.com/tokenbroker/tokenbroker/sources/oauthtest"
)

// Scale run of the real daemon, as an operator sees it: n client_credentials
// credentials configured through the environment, a local provider with
// 1-hour tokens, the real socket, the real `status` command.
//
// The normal suite runs 200 credentials with the race-built binary and
// checks what does not depend on the machine: every credential gets a
// token, `status --json` lists every one, `status --problems` lists none,
// and /metrics carries at most maxSeriesPerCredential series per credential.
//
// TOKENBROKER_SCALE=1 builds a release binary (no -race; -tags heapprofile
// so the daemon writes a heap profile on SIGUSR2) and runs 1, 1,000 and
// 5,000 credentials (TOKENBROKER_SCALE_CREDENTIALS=a,b,... for others),
// logging RSS and heap per credential, series per credential, the /metrics
// size, the status timings, the ready time and the token requests, and
// failing when RSS grows more than 4 KiB per credential at 5,000 or more.
// It keeps the heap profiles under TOKENBROKER_SCALE_PROFILES when that is
// set (profiling costs memory of its own: read RSS from a run without).
func TestScaleDaemon(t *testing.T) {
	if os.Getenv("TOKENBROKER_SCALE") != "1" {
		r := scaleDaemon(t, binary, 200, "")
		if r.series > maxSeriesPerCredential*r.n {
			t.Errorf("/metrics carries %d series with a credential label for %d credentials (%.1f each); want at most %d each",
				r.series, r.n, float64(r.series)/float64(r.n), maxSeriesPerCredential)
		}
		return
	}
	sizes := []int{1, 1000, 5000}
	if v := os.Getenv("TOKENBROKER_SCALE_CREDENTIALS"); v != "" {
		sizes = nil
		for _, s := range strings.Split(v, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(s))
			if err != nil || n < 1 {
				t.Fatalf("TOKENBROKER_SCALE_CREDENTIALS=%q: want numbers like 1,1000,5000", v)
			}
			sizes = append(sizes, n)
		}
	}
	bin := filepath.Join(t.TempDir(), "tokenbroker")
	if out, err := exec.Command("go", "build", "-tags", "heapprofile", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("building the release binary: %v\n%s", err, out)
	}
	var first *scaleResult
	for i, n := range sizes {
		r := scaleDaemon(t, bin, n, os.Getenv("TOKENBROKER_SCALE_PROFILES"))
		if i == 0 {
			// The baseline's RSS varies by half a MiB from run to run,
			// 100 B a credential at 5,000: take the median of three.
			r = medianRSS(r, scaleDaemon(t, bin, n, ""), scaleDaemon(t, bin, n, ""))
		}
		t.Logf("n=%d: ready in %s with %d token requests; RSS %.1f MiB, heap in use %.1f MiB; %d series with a credential label (%.2f each), %d series in all, /metrics %d bytes; status %s, status --json %s (%d bytes)",
			n, r.ready.Round(time.Millisecond), r.tokenRequests, mib(r.rss), mib(r.heapInuse), r.series, float64(r.series)/float64(n),
			r.allSeries, r.metricsBytes, r.status.Round(time.Millisecond), r.statusJSON.Round(time.Millisecond), r.statusJSONBytes)
		if first == nil {
			first = r
			continue
		}
		d := float64(n - first.n)
		perCred := float64(r.rss-first.rss) / d
		t.Logf("n=%d against n=%d: RSS %.0f B per credential, heap in use %.0f B per credential",
			n, first.n, perCred, float64(r.heapInuse-first.heapInuse)/d)
		if n >= 5000 && perCred > maxRSSPerCredential {
			t.Errorf("n=%d: RSS grows %.0f B per credential; the target is at most %d", n, perCred, maxRSSPerCredential)
		}
	}
}

// medianRSS returns the run whose RSS is the median of three.
func medianRSS(a, b, c *scaleResult) *scaleResult {
	runs := []*scaleResult{a, b, c}
	slices.SortFunc(runs, func(x, y *scaleResult) int { return cmp.Compare(x.rss, y.rss) })
	return runs[1]
}

// maxSeriesPerCredential is what one credential may add to a scrape by
// default (README, Metrics).
const maxSeriesPerCredential = 8

// maxRSSPerCredential is the target for the daemon's RSS growth per
// credential at 5,000 (docs/BENCHMARKS.md), checked by the full run only:
// it is the release binary's, and below 5,000 the runtime's fixed share
// dominates.
const maxRSSPerCredential = 4 << 10

type scaleResult struct {
	n                         int
	ready, status, statusJSON time.Duration
	tokenRequests             int
	rss, heapInuse            int64
	series, allSeries         int
	metricsBytes              int
	statusJSONBytes           int
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// scaleDaemon runs bin with n credentials and measures it.
func scaleDaemon(t *testing.T, bin string, n int, profiles string) *scaleResult {
	t.Helper()
	p := oauthtest.StartTest(t, oauthtest.Options{AccessLifetime: time.Hour})
	h := tbtest.NewHome(t)
	dir, sock := h.Dir, h.Socket
	tokenURL := p.TokenURL(oauthtest.Firework)
	names := make([]string, n)
	environ := h.Environ("TOKENBROKER_LOG_LEVEL=warn", "PATH="+os.Getenv("PATH"))
	for i := range n {
		names[i] = fmt.Sprintf("c%04d", i)
		p.AddClient(oauthtest.Client{ID: names[i], Secret: "s" + names[i], Scopes: []string{"videos:write"}, Dialect: oauthtest.Firework})
		up := "TOKENBROKER_" + strings.ToUpper(names[i]) + "_"
		environ = append(environ, up+"PROVIDER=firework", up+"GRANT=client_credentials", up+"TOKEN_URL="+tokenURL,
			up+"CLIENT_ID="+names[i], up+"CLIENT_SECRET=s"+names[i], up+"SCOPES=videos:write")
	}
	environ = append(environ, "TOKENBROKER_CREDENTIALS="+strings.Join(names, ","))
	if profiles != "" {
		environ = append(environ, "TB_HEAPPROFILE="+filepath.Join(dir, "heap.pprof"))
	}

	logs := &tbtest.SyncBuffer{}
	cmd := exec.Command(bin, "serve")
	cmd.Env = environ
	cmd.Stdout, cmd.Stderr = logs, logs
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d := &daemon{cmd: cmd, sock: sock, logs: logs, done: make(chan error, 1)}
	go func() { d.done <- cmd.Wait() }()
	t.Cleanup(d.kill)

	r := &scaleResult{n: n}
	// Ready: the provider has issued every credential's token.
	deadline := time.Now().Add(5 * time.Minute)
	for p.Stats().Issued < n {
		select {
		case err := <-d.done:
			t.Fatalf("serve exited: %v\n%s", err, logs)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 5 min the provider issued %d of %d tokens\n%s", p.Stats().Issued, n, logs)
		}
		time.Sleep(10 * time.Millisecond)
	}
	r.ready = time.Since(start)
	// Every credential is served once, as callers would.
	hc := httpOver(sock)
	for _, name := range names {
		if code, h, _ := get(t, hc, "/v1/tokens/"+name); code != http.StatusOK || !p.Valid(h.AccessToken) {
			t.Fatalf("GET /v1/tokens/%s: %d %s", name, code, h.Description)
		}
	}
	hc.CloseIdleConnections()
	r.tokenRequests = p.Stats().TokenRequests
	time.Sleep(2 * time.Second) // "some seconds after start", as an operator's top sees it
	r.rss = vmRSS(t, cmd.Process.Pid)
	if profiles != "" {
		r.saveProfile(t, cmd.Process.Pid, filepath.Join(dir, "heap.pprof"), filepath.Join(profiles, fmt.Sprintf("heap-%d.pprof", n)))
	}

	// /metrics: size, series, heap.
	resp, err := hc.Get("http://tokenbroker/metrics")
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		r.metricsBytes += len(line) + 1
		if line == "" || line[0] == '#' {
			continue
		}
		r.allSeries++
		if strings.Contains(line, `credential="`) {
			r.series++
		}
		if v, ok := strings.CutPrefix(line, "go_memstats_heap_inuse_bytes "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			r.heapInuse = int64(f)
		}
	}
	resp.Body.Close()
	if err := sc.Err(); err != nil {
		t.Fatalf("reading /metrics: %v", err)
	}

	// status and status --json, as an operator runs them.
	status := func(args ...string) ([]byte, time.Duration) {
		t.Helper()
		c := exec.Command(bin, append([]string{"status"}, args...)...)
		c.Env = []string{"TOKENBROKER_SOCKET=" + sock}
		start := time.Now()
		out, err := c.Output()
		took := time.Since(start)
		if err != nil {
			var stderr []byte
			if ee, ok := err.(*exec.ExitError); ok {
				stderr = ee.Stderr
			}
			t.Errorf("tokenbroker status %s: %v\n%s", strings.Join(args, " "), err, stderr)
		}
		return out, took
	}
	var out []byte
	out, r.status = status()
	if lines := strings.Count(string(out), "\n"); lines != n+1 {
		t.Errorf("status printed %d lines for %d credentials", lines, n)
	}
	out, r.statusJSON = status("--json")
	r.statusJSONBytes = len(out)
	var listed struct {
		Credentials []struct{ Name, State string } `json:"credentials"`
	}
	if err := json.Unmarshal(out, &listed); err != nil {
		t.Errorf("status --json is not JSON: %v", err)
	}
	if len(listed.Credentials) != n {
		t.Errorf("status --json listed %d credentials, want %d", len(listed.Credentials), n)
	}
	for _, c := range listed.Credentials {
		if c.State != "ok" {
			t.Errorf("status --json: %s is %q, want ok", c.Name, c.State)
		}
	}
	if out, _ := status("--problems"); string(out) != fmt.Sprintf("no problems: all %d %s ok\n", n, plural(n, "credential is", "credentials are")) {
		t.Errorf("status --problems with every credential ok printed:\n%.300s", out)
	}
	want := min(n, 10) + 1 // c0000 to c0009, and the header
	if n > 10 {
		want++ // the last one
	}
	if out, _ := status("c000?", names[n-1]); strings.Count(string(out), "\n") != want {
		t.Errorf("status c000? %s printed:\n%.2000s", names[n-1], out)
	}
	return r
}

// vmRSS reads a process's resident set from /proc, as top sees it.
func vmRSS(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("VmRSS %q: %v", v, err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no VmRSS in /proc/%d/status", pid)
	return 0
}

// saveProfile asks the daemon for a heap profile and copies it to dst.
func (r *scaleResult) saveProfile(t *testing.T, pid int, src, dst string) {
	t.Helper()
	if err := syscall.Kill(pid, syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if b, err := os.ReadFile(src); err == nil {
			if err := os.WriteFile(dst, b, 0o644); err != nil {
				t.Fatal(err)
			}
			ms, _ := os.ReadFile(src + ".memstats")
			t.Logf("n=%d: heap profile in %s; %s", r.n, dst, ms)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no heap profile at %s after 30s", src)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
