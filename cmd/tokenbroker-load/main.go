// Command tokenbroker-load measures how fast a tokenbroker hands out tokens,
// against a baseline: a bare net/http server on a Unix socket answering the
// broker's own answer, byte for byte, with the broker's server settings.
// The broker/baseline ratios say what the broker's own work costs on top of
// the HTTP serving every implementation pays for.
//
//	go run ./cmd/tokenbroker-load -self
//	go run ./cmd/tokenbroker-load -socket /run/tokenbroker/tokenbroker.sock -name firework
//
// -self starts a local OAuth provider, a broker and its API server in this
// process, wired as the daemon wires them. With -socket the broker is
// another process, so the baseline runs in a child process too.
//
// For each client count it runs rounds, each measuring the broker and the
// baseline once, interleaved: by default AB BA AB ... (-order abba), which
// cancels slow drift and any advantage of running first in a round; -order
// abab keeps the broker first. Each run uses fresh connections: one
// keep-alive Unix connection per client goroutine, closed loop, every
// answer read whole and checked (200 and "access_token" in the body). The
// verdicts use the median of the rounds' ratios.
//
// -aa measures the baseline in both slots: its ratios are the noise floor
// of the machine, which -cpuprofile and the CPU/request row help see past.
//
// Exit status: 0 when every ratio meets its target and no request failed,
// 1 when one misses or a request failed, 2 when the tool could not run.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) == 2 && os.Args[1] == internalBaselineFlag {
		if err := serveBaselineChild(os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "tokenbroker-load:", err)
			os.Exit(2)
		}
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	switch {
	case errors.Is(err, flag.ErrHelp):
		os.Exit(0)
	case err != nil:
		fmt.Fprintln(os.Stderr, "tokenbroker-load:", err)
		os.Exit(2)
	case !rep.Pass:
		os.Exit(1)
	}
}

type config struct {
	socket, name string
	self         bool
	clients      []int
	duration     time.Duration
	warmup       time.Duration
	rounds       int
	json         bool
	aa           bool
	selfAccess   bool
	order        string
	cpuprofile   string
	reader       string
	baseline     string
	minTput      float64
	maxP99       float64
}

func parseFlags(args []string, stderr io.Writer) (*config, error) {
	c := &config{}
	fs := flag.NewFlagSet("tokenbroker-load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, `usage: tokenbroker-load -self [flags]
       tokenbroker-load -socket PATH -name CRED [flags]

Measures handout throughput and latency of a broker and of a baseline (a bare
net/http server on a Unix socket repeating the broker's answer) and reports
the broker/baseline ratios.

Exit status: 0 every target met, 1 a target missed or requests failed, 2 the
tool could not run.

Flags:`)
		fs.PrintDefaults()
	}
	fs.StringVar(&c.socket, "socket", "", "`path` of a running broker's socket")
	fs.StringVar(&c.name, "name", "", "`credential` to fetch (with -self: "+selfName+")")
	fs.BoolVar(&c.self, "self", false, "start a local provider, a broker and its API server in this process")
	clients := fs.String("clients", "1,16,256", "comma-separated client counts (goroutines, one connection each)")
	fs.DurationVar(&c.duration, "duration", 5*time.Second, "measured time per run")
	fs.DurationVar(&c.warmup, "warmup", time.Second, "unmeasured time before each run")
	fs.IntVar(&c.rounds, "rounds", 3, "rounds per client count; each runs the broker and the baseline once, in the order -order says")
	fs.StringVar(&c.order, "order", "abba", "run order within rounds: abba (broker first in odd rounds, baseline first in even ones: AB BA AB ..., which cancels linear drift and any advantage of running first) or abab (broker always first: AB AB AB ...)")
	fs.BoolVar(&c.selfAccess, "self-access", false, "with -self: give the credential an access rule (ALLOW_UIDS=this user), so each handout runs the caller check")
	fs.BoolVar(&c.json, "json", false, "write the report as JSON")
	fs.BoolVar(&c.aa, "aa", false, "A/A calibration: measure the baseline in the broker's slot too, to see the noise floor of the ratios")
	fs.StringVar(&c.cpuprofile, "cpuprofile", "", "write a CPU profile of the whole process to `file` (goroutines carry pprof labels side=client|server, target=broker|baseline)")
	fs.StringVar(&c.reader, "reader", "fast", "client answer reader: fast (allocation-free HTTP/1.1 reader) or std (net/http ReadResponse)")
	fs.StringVar(&c.baseline, "baseline", "auto", "where the baseline server runs: inprocess, subprocess, or auto (inprocess with -self, subprocess with -socket)")
	fs.Float64Var(&c.minTput, "min-throughput-ratio", 0.90, "target: broker/baseline throughput at least this")
	fs.Float64Var(&c.maxP99, "max-p99-ratio", 1.5, "target: broker/baseline p99 latency at most this")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	usage := func(format string, a ...any) error {
		err := fmt.Errorf(format, a...)
		fmt.Fprintln(stderr, "tokenbroker-load:", err)
		fs.Usage()
		return err
	}
	if fs.NArg() > 0 {
		return nil, usage("unexpected arguments %q", fs.Args())
	}
	switch {
	case c.self && c.socket != "":
		return nil, usage("-self and -socket exclude each other")
	case c.self && c.name != "" && c.name != selfName:
		return nil, usage("-self serves the credential %q only", selfName)
	case !c.self && c.selfAccess:
		return nil, usage("-self-access needs -self")
	case c.self:
		c.name = selfName
	case c.socket == "" || c.name == "":
		return nil, usage("give -self, or -socket and -name")
	}
	if strings.ContainsAny(c.name, "/ \r\n?#%") || c.name == "" {
		return nil, usage("-name %q is not a credential name", c.name)
	}
	for _, f := range strings.Split(*clients, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, usage("-clients: %q is not a positive number", f)
		}
		c.clients = append(c.clients, n)
	}
	if c.duration <= 0 || c.warmup < 0 || c.rounds < 1 {
		return nil, usage("-duration must be positive, -warmup not negative, -rounds at least 1")
	}
	if c.order != "abba" && c.order != "abab" {
		return nil, usage("-order is abba or abab")
	}
	if c.reader != "fast" && c.reader != "std" {
		return nil, usage("-reader is fast or std")
	}
	switch c.baseline {
	case "auto":
		c.baseline = "subprocess"
		if c.self {
			c.baseline = "inprocess"
		}
	case "inprocess", "subprocess":
	default:
		return nil, usage("-baseline is inprocess, subprocess or auto")
	}
	return c, nil
}

// run is the tool: it parses args, measures and writes the report to
// stdout (progress goes to stderr).
func run(ctx context.Context, args []string, stdout, stderr io.Writer) (*Report, error) {
	// The baseline child's stderr is copied in by os/exec's goroutine.
	stderr = &lockedWriter{w: stderr}
	cfg, err := parseFlags(args, stderr)
	if err != nil {
		return nil, err
	}
	dir, err := tempDir()
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)

	rep := &Report{
		Machine: machineInfo(),
		Settings: Settings{
			Clients: cfg.clients, Duration: cfg.duration.String(), Warmup: cfg.warmup.String(),
			Rounds: cfg.rounds, Order: cfg.order, Reader: cfg.reader, Baseline: cfg.baseline,
			MinThroughputRatio: cfg.minTput, MaxP99Ratio: cfg.maxP99,
		},
		Credential: cfg.name,
		SelfAccess: cfg.selfAccess,
	}

	socket := cfg.socket
	rep.Mode = "socket"
	if cfg.self {
		rep.Mode = "self"
		sb, err := startSelf(dir, cfg.selfAccess, stderr)
		if err != nil {
			return nil, fmt.Errorf("-self: %w", err)
		}
		defer sb.close()
		socket = sb.socket
	}
	rep.Socket = socket

	a, err := fetchAnswer(socket, cfg.name, 15*time.Second)
	if err != nil {
		return nil, fmt.Errorf("the broker at %s did not hand out %q: %w", socket, cfg.name, err)
	}
	rep.AnswerBytes = len(a.Body)
	rep.AnswerHeaders = headerNames(a.Header)

	var bl *baseline
	if cfg.baseline == "subprocess" {
		bl, err = startBaselineProcess(dir, a, stderr)
	} else {
		bl, err = startBaselineInProcess(dir, a)
	}
	if err != nil {
		return nil, fmt.Errorf("baseline: %w", err)
	}
	defer bl.stop()
	check, err := fetchOnce(bl.socket, buildRequest(cfg.name))
	if err == nil {
		err = sameAnswer(a, check)
	}
	if err != nil {
		return nil, fmt.Errorf("baseline: %w", err)
	}

	if cfg.cpuprofile != "" {
		f, err := os.Create(cfg.cpuprofile)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return nil, err
		}
		defer pprof.StopCPUProfile()
	}

	req := buildRequest(cfg.name)
	std := cfg.reader == "std"
	brokerSocket := socket
	if cfg.aa {
		rep.AA, brokerSocket = true, bl.socket
	}
	brokerPID, baselinePID := peerPID(brokerSocket), peerPID(bl.socket)
	rep.BrokerInProcess = brokerPID == os.Getpid()
	rep.ServerCPUKnown = brokerPID > 0 && baselinePID > 0
	rep.Pass = true
	for _, n := range cfg.clients {
		cr := ClientResult{Clients: n}
		bAll, lAll := &runSum{hist: newHist()}, &runSum{hist: newHist()}
		for r := 1; r <= cfg.rounds; r++ {
			var rr RoundResult
			rr.Round = r
			type slot struct {
				name, socket string
				pid          int
				sum          *runSum
				out          *TargetResult
			}
			slots := []slot{
				{"broker", brokerSocket, brokerPID, bAll, &rr.Broker},
				{"baseline", bl.socket, baselinePID, lAll, &rr.Baseline},
			}
			if cfg.order == "abba" && r%2 == 0 {
				slots[0], slots[1] = slots[1], slots[0]
			}
			for _, t := range slots {
				runtime.GC() // each run starts from a collected heap
				res, err := measure(ctx, t.name, t.socket, t.pid, req, n, cfg.warmup, cfg.duration, std)
				if err != nil {
					return nil, err
				}
				t.sum.add(res)
				*t.out = targetResult(t.name, res.ok, res.errors, res.elapsed, res.hist, res.firstErr)
				t.out.setAllocs(res.allocs, res.allocBytes, res.gcs)
				t.out.setCPU(res.selfCPU, res.serverCPU)
				fmt.Fprintf(stderr, "clients %d round %d/%d %-8s %9.0f req/s  p50 %s  p99 %s  errors %d\n",
					n, r, cfg.rounds, t.name, t.out.RPS, fmtDur(res.hist.quantile(0.50)), fmtDur(res.hist.quantile(0.99)), res.errors)
			}
			rr.ThroughputRatio = ratio(rr.Broker.RPS, rr.Baseline.RPS)
			rr.P99Ratio = ratio(rr.Broker.P99us, rr.Baseline.P99us)
			rr.ServerCPURatio = ratio(rr.Broker.ServerCPUPerReqUs, rr.Baseline.ServerCPUPerReqUs)
			cr.Rounds = append(cr.Rounds, rr)
		}
		cr.Broker = bAll.result("broker")
		cr.Baseline = lAll.result("baseline")
		cr.AggregateThroughputRatio = ratio(cr.Broker.RPS, cr.Baseline.RPS)
		cr.AggregateP99Ratio = ratio(cr.Broker.P99us, cr.Baseline.P99us)
		cr.AggregateServerCPURatio = ratio(cr.Broker.ServerCPUPerReqUs, cr.Baseline.ServerCPUPerReqUs)
		var tr, pr, cpr []float64
		for _, rr := range cr.Rounds {
			tr, pr, cpr = append(tr, rr.ThroughputRatio), append(pr, rr.P99Ratio), append(cpr, rr.ServerCPURatio)
		}
		cr.ThroughputRatio, cr.P99Ratio, cr.ServerCPURatio = median(tr), median(pr), median(cpr)
		cr.ThroughputPass = cr.ThroughputRatio >= cfg.minTput
		cr.P99Pass = cr.P99Ratio <= cfg.maxP99
		if !cr.ThroughputPass || !cr.P99Pass || cr.Broker.Errors > 0 || cr.Baseline.Errors > 0 {
			rep.Pass = false
		}
		rep.Results = append(rep.Results, cr)
	}

	rep.Machine.LoadAfter = loadavg()
	if cfg.json {
		err = writeJSON(stdout, rep)
	} else {
		err = writeMarkdown(stdout, rep)
	}
	return rep, err
}

// tempDir makes a private directory short enough for socket paths.
func tempDir() (string, error) {
	dir, err := os.MkdirTemp("", "tbload-")
	if err != nil {
		return "", err
	}
	if len(filepath.Join(dir, "baseline.sock")) > 100 {
		os.RemoveAll(dir)
		return os.MkdirTemp("/tmp", "tbload-")
	}
	return dir, nil
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// runSum adds up the rounds of one target at one client count.
type runSum struct {
	ok, errors              uint64
	allocs, allocBytes, gcs uint64
	selfCPU, serverCPU      time.Duration // -1 once a round's is unknown
	elapsed                 time.Duration
	hist                    *hist
	firstErr                string
}

func (s *runSum) add(r *runResult) {
	s.ok += r.ok
	s.errors += r.errors
	s.allocs += r.allocs
	s.allocBytes += r.allocBytes
	s.gcs += r.gcs
	s.selfCPU = addCPU(s.selfCPU, r.selfCPU)
	s.serverCPU = addCPU(s.serverCPU, r.serverCPU)
	s.elapsed += r.elapsed
	s.hist.merge(r.hist)
	if s.firstErr == "" {
		s.firstErr = r.firstErr
	}
}

func (s *runSum) result(name string) TargetResult {
	t := targetResult(name, s.ok, s.errors, s.elapsed, s.hist, s.firstErr)
	t.setAllocs(s.allocs, s.allocBytes, s.gcs)
	t.setCPU(s.selfCPU, s.serverCPU)
	return t
}

func addCPU(a, b time.Duration) time.Duration {
	if a < 0 || b < 0 {
		return -1
	}
	return a + b
}

// setCPU sets the CPU time per request, 0 when unknown.
func (t *TargetResult) setCPU(self, server time.Duration) {
	if t.Requests == 0 {
		return
	}
	per := func(d time.Duration) float64 {
		if d < 0 {
			return 0
		}
		return float64(d) / float64(time.Microsecond) / float64(t.Requests)
	}
	t.ProcessCPUPerReqUs, t.ServerCPUPerReqUs = per(self), per(server)
}

func (t *TargetResult) setAllocs(allocs, bytes, gcs uint64) {
	if t.Requests > 0 {
		t.ProcessAllocsPerReq = float64(allocs) / float64(t.Requests)
		t.ProcessBytesPerReq = float64(bytes) / float64(t.Requests)
	}
	t.GCCycles = gcs
}

func targetResult(name string, ok, errs uint64, elapsed time.Duration, h *hist, firstErr string) TargetResult {
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
	t := TargetResult{
		Target: name, Requests: ok, Errors: errs, ElapsedSeconds: elapsed.Seconds(),
		P50us: us(h.quantile(0.50)), P90us: us(h.quantile(0.90)), P99us: us(h.quantile(0.99)),
		MaxUs: us(time.Duration(h.max)), MeanUs: us(h.mean()), FirstError: firstErr,
	}
	if h.n == 0 {
		t.MaxUs = 0
	}
	if elapsed > 0 {
		t.RPS = float64(ok) / elapsed.Seconds()
	}
	return t
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
