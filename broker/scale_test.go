package broker_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/api"
	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/broker/store/file"
	"github.com/tokenbroker/tokenbroker/sources"
	"github.com/tokenbroker/tokenbroker/sources/oauthtest"
)

// Scale run. TestScale wires a broker as the daemon does (one shared
// http.Client, an Endpoint per credential in the Firework client_credentials
// dialect, the FileStore in a temporary state dir, api.Metrics as the
// Observer, then api.NewServer with an access map) over n credentials, each
// its own client at a local provider, and reports:
//
//   - the time from Start until every credential holds a token, with the
//     default ProviderConcurrency (4), and the most token requests that were
//     in flight at once (counted by a wrapping http.RoundTripper);
//   - the heap per credential: runtime HeapAlloc and HeapInuse after a GC,
//     before the credentials were built and once the server is up, divided
//     by n; and the process RSS (VmRSS from /proc/self/status);
//   - the CPU per refresh: getrusage user+sys over a forced refresh of every
//     credential, divided by n.
//
// The provider runs in a child process (this test binary, running
// TestScaleProviderProcess), so its memory and CPU are not counted.
//
// The normal suite runs it with 100 credentials (a few seconds, mostly the
// FileStore's fsyncs: every save writes a file and fsyncs it and the
// directory, one save at a time); TOKENBROKER_SCALE=1 runs 10 000, and
// TOKENBROKER_SCALE_CREDENTIALS=n any other number. It asserts what does
// not depend on the machine's speed: every credential gets a valid token,
// the provider is never asked more than ProviderConcurrency at once, and
// every refresh reaches it exactly once.
func TestScale(t *testing.T) {
	n := 100
	if os.Getenv("TOKENBROKER_SCALE") == "1" {
		n = 10_000
	}
	if v, err := strconv.Atoi(os.Getenv("TOKENBROKER_SCALE_CREDENTIALS")); err == nil && v > 0 {
		n = v
	}
	// daemon: wired as serve wires it. engine: no metrics and no API
	// server, to tell the engine's own memory from the metrics'.
	t.Run("daemon", func(t *testing.T) { scaleRun(t, n, true) })
	t.Run("engine", func(t *testing.T) { scaleRun(t, n, false) })
}

func scaleRun(t *testing.T, n int, wired bool) {
	const concurrency = 4 // the default, set explicitly
	prov := startProviderProcess(t, n)
	tr := http.DefaultTransport.(*http.Transport).Clone() // as http.Client{} uses
	var dials atomic.Int64
	dial := tr.DialContext
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		dials.Add(1)
		return dial(ctx, network, addr)
	}
	rt := &inflightTransport{next: tr}
	hc := &http.Client{Timeout: 30 * time.Second, Transport: rt}
	log := slog.New(slog.DiscardHandler)
	var metrics *api.Metrics
	if wired {
		metrics = api.NewMetrics(api.MetricsOptions{Version: "scale"})
	}
	obs := &readyObserver{Metrics: metrics, want: int64(n), done: make(chan struct{})}
	dir := t.TempDir()

	mem0, rss0 := memNow()
	creds := make([]broker.Credential, 0, n)
	for i := range n {
		name := fmt.Sprintf("svc-%05d", i)
		d, err := sources.Preset("firework", sources.ClientCredentials)
		if err != nil {
			t.Fatal(err)
		}
		d.TokenURL = prov.url
		scopes := []string{"videos:write"}
		e := &sources.Endpoint{Dialect: &d, HTTP: hc, Warn: func(msg string) { log.Warn(msg, "credential", name) },
			Client: sources.Client{ID: name, Secret: sources.NewSecret("secret-" + name), Scopes: scopes}}
		src, err := sources.New(sources.ClientCredentials, e, "", nil) // nil: the Client's secrets
		if err != nil {
			t.Fatal(err)
		}
		creds = append(creds, broker.Credential{Name: name, Provider: "firework", Source: src,
			Fingerprint: url.Values{"token_url": {d.TokenURL}, "client_id": {name}, "grant": {string(sources.ClientCredentials)},
				"scope": {strings.Join(scopes, " ")}, "subject": {""}}.Encode()})
	}
	memCreds, _ := memNow()
	st, err := file.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if metrics != nil { // as serve does, before the broker starts
		for _, c := range creds {
			metrics.AddCredential(c.Name, c.Provider)
		}
	}
	b, err := broker.New(broker.Options{Store: st, Logger: log, Observer: obs, ProviderConcurrency: concurrency}, creds)
	if err != nil {
		t.Fatal(err)
	}
	names := b.Names()
	creds = nil
	memNew, _ := memNow()
	start := time.Now()
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	select {
	case <-obs.done:
	case <-time.After(30 * time.Minute):
		t.Fatalf("after 30 min, %d of %d credentials hold a token", obs.ok.Load(), n)
	}
	ready := time.Since(start)
	memReady, _ := memNow()
	var srv *api.Server
	if wired {
		access := make(map[string]api.Access, n)
		for _, name := range names {
			access[name] = api.Access{}
		}
		srv = api.NewServer(b, api.Options{Logger: log, Metrics: metrics, Access: access})
	}
	mem1, rss1 := memNow()
	dialsReady := dials.Load()

	ctx := context.Background()
	var sample []string
	for i, name := range names {
		h, err := b.Token(ctx, name)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if i%max(1, n/50) == 0 {
			sample = append(sample, h.AccessToken.Reveal())
		}
	}
	for _, tok := range sample {
		if !prov.valid(t, tok) {
			t.Fatal("the provider does not know a handed-out token")
		}
	}

	// A forced refresh of every credential, 64 callers at a time (the
	// provider cap holds them to 4 requests in flight).
	ru0 := rusage(t)
	refreshStart := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	var failed atomic.Int64
	for range 64 {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(names) {
					return
				}
				if err := b.Refresh(ctx, names[i]); err != nil {
					failed.Add(1)
					t.Errorf("refresh %s: %v", names[i], err)
				}
			}
		})
	}
	wg.Wait()
	refreshWall := time.Since(refreshStart)
	ru1 := rusage(t)
	runtime.KeepAlive(srv)

	requests, issued := prov.stats(t)
	if requests != 2*n || issued != 2*n {
		t.Errorf("the provider saw %d token requests and issued %d tokens; want %d of each (one per credential, one per forced refresh)", requests, issued, 2*n)
	}
	if m := rt.max.Load(); m > concurrency {
		t.Errorf("%d token requests were in flight at once; ProviderConcurrency is %d", m, concurrency)
	}
	cpu := (ru1.user + ru1.sys) - (ru0.user + ru0.sys)
	heapAlloc := float64(int64(mem1.HeapAlloc)-int64(mem0.HeapAlloc)) / float64(n)
	heapInuse := float64(int64(mem1.HeapInuse)-int64(mem0.HeapInuse)) / float64(n)
	wiring := "engine only (no metrics, no API server)"
	if wired {
		wiring = "as the daemon (api.Metrics, api.NewServer with an access map)"
	}
	t.Logf("scale: %d client_credentials credentials, FileStore, ProviderConcurrency %d, GOMAXPROCS %d, %s", n, concurrency, runtime.GOMAXPROCS(0), wiring)
	t.Logf("scale: Start to all tokens ready: %v (%.0f credentials/s); provider requests in flight at most: %d; TCP connections opened: %d at start, %d in the forced refresh",
		ready.Round(time.Millisecond), float64(n)/ready.Seconds(), rt.max.Load(), dialsReady, dials.Load()-dialsReady)
	t.Logf("scale: heap per credential: %.0f B (HeapAlloc %d -> %d), %.0f B (HeapInuse %d -> %d); RSS %d kB -> %d kB (%.0f B per credential)",
		heapAlloc, mem0.HeapAlloc, mem1.HeapAlloc, heapInuse, mem0.HeapInuse, mem1.HeapInuse, rss0, rss1, float64(rss1-rss0)*1024/float64(n))
	per := func(a, b runtime.MemStats) float64 {
		return float64(int64(b.HeapAlloc)-int64(a.HeapAlloc)) / float64(n)
	}
	t.Logf("scale: HeapAlloc per credential by stage: sources (Endpoint, Dialect copy, Source, logger, Credential) %.0f B; broker.New %.0f B; Start to ready (tokens, metrics' refresh counters) %.0f B; api.NewServer (handout counters, access map) %.0f B",
		per(mem0, memCreds), per(memCreds, memNew), per(memNew, memReady), per(memReady, mem1))
	t.Logf("scale: forced refresh of all: %v wall (%.0f refreshes/s), CPU %v user + %v sys = %.1f µs per refresh",
		refreshWall.Round(time.Millisecond), float64(n)/refreshWall.Seconds(), (ru1.user - ru0.user).Round(time.Millisecond),
		(ru1.sys - ru0.sys).Round(time.Millisecond), float64(cpu)/float64(time.Microsecond)/float64(n))
}

// readyObserver counts credentials whose first refresh succeeded and closes
// done when want of them have. It passes every event on to the metrics, as
// the daemon's Observer does.
type readyObserver struct {
	*api.Metrics // nil: none
	want         int64
	ok           atomic.Int64
	seen         sync.Map
	done         chan struct{}
}

func (o *readyObserver) Refreshed(credential, provider string, result broker.Result, d time.Duration) {
	if o.Metrics != nil {
		o.Metrics.Refreshed(credential, provider, result, d)
	}
	if result != broker.ResultOK {
		return
	}
	if _, dup := o.seen.LoadOrStore(credential, true); !dup && o.ok.Add(1) == o.want {
		close(o.done)
	}
}

func (o *readyObserver) LockWaited(credential string, d time.Duration, outcome string) {
	if o.Metrics != nil {
		o.Metrics.LockWaited(credential, d, outcome)
	}
}

func (o *readyObserver) RequestSlow(string) {}
func (o *readyObserver) AnswerLost(string)  {}
func (o *readyObserver) Endpoint(provider string, event broker.EndpointEvent) {
	if o.Metrics != nil {
		o.Metrics.Endpoint(provider, event)
	}
}

// inflightTransport counts the requests in flight and keeps the maximum.
type inflightTransport struct {
	next     http.RoundTripper
	cur, max atomic.Int64
}

func (t *inflightTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	n := t.cur.Add(1)
	for m := t.max.Load(); n > m && !t.max.CompareAndSwap(m, n); m = t.max.Load() {
	}
	defer t.cur.Add(-1)
	resp, err := t.next.RoundTrip(r)
	if err == nil {
		// The request is in flight until its answer has been read.
		resp.Body = &countedBody{ReadCloser: resp.Body, t: t}
		t.cur.Add(1)
	}
	return resp, err
}

type countedBody struct {
	io.ReadCloser
	t    *inflightTransport
	once sync.Once
}

func (b *countedBody) Close() error {
	b.once.Do(func() { b.t.cur.Add(-1) })
	return b.ReadCloser.Close()
}

func memNow() (runtime.MemStats, int64) {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m, vmRSS()
}

// vmRSS is the process's resident set in kB, 0 when unknown.
func vmRSS() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for l := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return 0
}

type cpuTimes struct{ user, sys time.Duration }

func rusage(t *testing.T) cpuTimes {
	t.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return cpuTimes{time.Duration(ru.Utime.Nano()), time.Duration(ru.Stime.Nano())}
}

// providerProcess is a local provider in a child process.
type providerProcess struct {
	url string
	mu  sync.Mutex
	in  io.WriteCloser
	out *bufio.Reader
}

func startProviderProcess(t *testing.T, clients int) *providerProcess {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestScaleProviderProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), "TOKENBROKER_SCALE_CHILD=1", "TOKENBROKER_SCALE_CLIENTS="+strconv.Itoa(clients))
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		in.Close()
		done := make(chan struct{})
		go func() { _, _ = io.Copy(io.Discard, out); _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	p := &providerProcess{in: in, out: bufio.NewReader(out)}
	line := p.read(t)
	u, ok := strings.CutPrefix(line, "url ")
	if !ok {
		t.Fatalf("provider process said %q; want its URL", line)
	}
	p.url = u
	return p
}

func (p *providerProcess) read(t *testing.T) string {
	t.Helper()
	for {
		l, err := p.out.ReadString('\n')
		if err != nil {
			t.Fatalf("provider process: %v", err)
		}
		l = strings.TrimSpace(l)
		if strings.HasPrefix(l, "url ") || strings.HasPrefix(l, "stats ") || strings.HasPrefix(l, "valid ") {
			return l
		}
	}
}

func (p *providerProcess) ask(t *testing.T, q string) string {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, err := fmt.Fprintln(p.in, q); err != nil {
		t.Fatal(err)
	}
	return p.read(t)
}

func (p *providerProcess) valid(t *testing.T, tok string) bool {
	return p.ask(t, "valid "+tok) == "valid true"
}

func (p *providerProcess) stats(t *testing.T) (requests, issued int) {
	if _, err := fmt.Sscanf(p.ask(t, "stats"), "stats %d %d", &requests, &issued); err != nil {
		t.Fatal(err)
	}
	return requests, issued
}

// TestScaleProviderProcess is TestScale's provider, run in a child process:
// it registers the clients, prints the token URL, and answers "stats" and
// "valid TOKEN" lines on stdin until stdin closes.
func TestScaleProviderProcess(t *testing.T) {
	if os.Getenv("TOKENBROKER_SCALE_CHILD") != "1" {
		t.Skip("the provider process of TestScale")
	}
	n, _ := strconv.Atoi(os.Getenv("TOKENBROKER_SCALE_CLIENTS"))
	p := oauthtest.StartTest(t, oauthtest.Options{AccessLifetime: time.Hour})
	for i := range n {
		name := fmt.Sprintf("svc-%05d", i)
		p.AddClient(oauthtest.Client{ID: name, Secret: "secret-" + name, Scopes: []string{"videos:write"}, Dialect: oauthtest.Firework})
	}
	fmt.Printf("url %s\n", p.TokenURL(oauthtest.Firework))
	sc := bufio.NewScanner(os.Stdin)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 1 && f[0] == "stats":
			st := p.Stats()
			fmt.Printf("stats %d %d\n", st.TokenRequests, st.Issued)
		case len(f) == 2 && f[0] == "valid":
			fmt.Printf("valid %v\n", p.Valid(f[1]))
		}
	}
}
