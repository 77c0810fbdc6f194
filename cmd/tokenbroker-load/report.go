package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"time"
)

// Report is what a run measured; -json writes it as is.
type Report struct {
	Machine       Machine  `json:"machine"`
	Mode          string   `json:"mode"` // self or socket
	Socket        string   `json:"socket"`
	Credential    string   `json:"credential"`
	AnswerBytes   int      `json:"answer_bytes"`   // the body both targets send
	AnswerHeaders []string `json:"answer_headers"` // set by the handler, besides Date and Content-Length
	Settings      Settings `json:"settings"`
	AA            bool     `json:"aa,omitzero"` // -aa: the broker slot measured the baseline
	// BrokerInProcess: the broker is this process (-self), so its server
	// CPU is this whole process's, clients included. ServerCPUKnown: both
	// servers' CPU times were readable (SO_PEERCRED and /proc).
	BrokerInProcess bool           `json:"broker_in_process"`
	ServerCPUKnown  bool           `json:"server_cpu_known"`
	SelfAccess      bool           `json:"self_access,omitzero"` // -self-access
	Results         []ClientResult `json:"results"`
	// Pass: every ratio met its target and no request failed.
	Pass bool `json:"pass"`
}

// Machine describes where the figures were measured.
type Machine struct {
	CPUModel   string `json:"cpu_model"`
	NumCPU     int    `json:"num_cpu"`      // CPUs this process may run on
	ProcCPUs   int    `json:"proc_cpuinfo"` // logical CPUs in /proc/cpuinfo (0 when unreadable)
	GOMAXPROCS int    `json:"gomaxprocs"`   // of this process
	GoVersion  string `json:"go_version"`   // of this binary
	OSArch     string `json:"os_arch"`      // GOOS/GOARCH
	Kernel     string `json:"kernel,omitzero"`
	// LoadBefore and LoadAfter are /proc/loadavg around the measurements:
	// other work on the machine makes the figures noisy.
	LoadBefore string `json:"loadavg_before,omitzero"`
	LoadAfter  string `json:"loadavg_after,omitzero"`
}

// Settings are the run's parameters.
type Settings struct {
	Clients            []int   `json:"clients"`
	Duration           string  `json:"duration"`
	Warmup             string  `json:"warmup"`
	Rounds             int     `json:"rounds"`
	Order              string  `json:"order"` // abba or abab
	Reader             string  `json:"reader"`
	Baseline           string  `json:"baseline"` // inprocess or subprocess
	MinThroughputRatio float64 `json:"min_throughput_ratio"`
	MaxP99Ratio        float64 `json:"max_p99_ratio"`
}

// ClientResult is one client count: both targets over all rounds, the
// rounds, and the ratios. ThroughputRatio and P99Ratio, which the verdicts
// use, are the medians of the rounds' ratios: each round's broker and
// baseline runs are adjacent in time, so their ratio cancels slow drift.
// The aggregate ratios compare all rounds pooled.
type ClientResult struct {
	Clients                  int           `json:"clients"`
	Broker                   TargetResult  `json:"broker"`   // all rounds pooled
	Baseline                 TargetResult  `json:"baseline"` // all rounds pooled
	Rounds                   []RoundResult `json:"rounds"`
	ThroughputRatio          float64       `json:"throughput_ratio"`
	P99Ratio                 float64       `json:"p99_ratio"`
	AggregateThroughputRatio float64       `json:"aggregate_throughput_ratio"`
	AggregateP99Ratio        float64       `json:"aggregate_p99_ratio"`
	// ServerCPURatio is the median round's ratio of the servers' CPU time
	// per request (informational: no target). It is what the broker's work
	// costs, and less at the mercy of other load than wall-clock figures.
	ServerCPURatio          float64 `json:"server_cpu_ratio"`
	AggregateServerCPURatio float64 `json:"aggregate_server_cpu_ratio"`
	ThroughputPass          bool    `json:"throughput_pass"`
	P99Pass                 bool    `json:"p99_pass"`
}

// RoundResult is one broker run and the baseline run after it.
type RoundResult struct {
	Round           int          `json:"round"`
	Broker          TargetResult `json:"broker"`
	Baseline        TargetResult `json:"baseline"`
	ThroughputRatio float64      `json:"throughput_ratio"`
	P99Ratio        float64      `json:"p99_ratio"`
	ServerCPURatio  float64      `json:"server_cpu_ratio"`
}

// TargetResult is one target's figures. Latencies are in microseconds,
// within 0.8% (the histogram's resolution); max is exact.
type TargetResult struct {
	Target         string  `json:"target"`
	Requests       uint64  `json:"requests"` // successful, in the measured window
	Errors         uint64  `json:"errors"`   // failed, warm-up included
	ElapsedSeconds float64 `json:"elapsed_seconds"`
	RPS            float64 `json:"rps"`
	P50us          float64 `json:"p50_us"`
	P90us          float64 `json:"p90_us"`
	P99us          float64 `json:"p99_us"`
	MaxUs          float64 `json:"max_us"`
	MeanUs         float64 `json:"mean_us"`
	FirstError     string  `json:"first_error,omitzero"`
	// This process's heap allocations per successful request and GC cycles
	// in the measured windows. With -self they are the server's (the fast
	// reader allocates nothing per request); with -socket, the client's.
	ProcessAllocsPerReq float64 `json:"process_allocs_per_req"`
	ProcessBytesPerReq  float64 `json:"process_bytes_per_req"`
	GCCycles            uint64  `json:"gc_cycles"`
	// CPU time per successful request in the measured windows, µs: of this
	// process (the clients; with -self everything), and of the server's
	// process (with -self the same figure). 0 when unknown.
	ProcessCPUPerReqUs float64 `json:"process_cpu_per_req_us"`
	ServerCPUPerReqUs  float64 `json:"server_cpu_per_req_us"`
}

func machineInfo() Machine {
	m := Machine{
		CPUModel:   "unknown",
		NumCPU:     runtime.NumCPU(),
		GOMAXPROCS: runtime.GOMAXPROCS(0),
		GoVersion:  runtime.Version(),
		OSArch:     runtime.GOOS + "/" + runtime.GOARCH,
	}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			k, v, ok := strings.Cut(sc.Text(), ":")
			if !ok {
				continue
			}
			k, v = strings.TrimSpace(k), strings.TrimSpace(v)
			switch {
			case k == "processor":
				m.ProcCPUs++
			case m.CPUModel == "unknown" && (k == "model name" || k == "Model" || k == "Hardware" || k == "cpu model"):
				m.CPUModel = v
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	m.LoadBefore = loadavg()
	return m
}

// loadavg is the 1, 5 and 15 minute load averages, or "".
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

func writeJSON(w io.Writer, r *Report) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

func writeMarkdown(w io.Writer, r *Report) error {
	var b strings.Builder
	m := r.Machine
	fmt.Fprintf(&b, "# tokenbroker handout load: broker vs baseline\n\n")
	fmt.Fprintf(&b, "- CPU: %s\n", m.CPUModel)
	fmt.Fprintf(&b, "- cores: %d usable by this process (runtime.NumCPU), %d logical in /proc/cpuinfo\n", m.NumCPU, m.ProcCPUs)
	fmt.Fprintf(&b, "- GOMAXPROCS: %d (this process", m.GOMAXPROCS)
	switch {
	case r.Mode == "self":
		b.WriteString(": clients, broker and baseline share it)\n")
	case r.Settings.Baseline == "subprocess":
		b.WriteString("; the broker and the baseline child run in their own processes)\n")
	default:
		b.WriteString("; the broker runs in its own process, the baseline in this one)\n")
	}
	fmt.Fprintf(&b, "- Go: %s %s", m.GoVersion, m.OSArch)
	if m.Kernel != "" {
		fmt.Fprintf(&b, ", kernel %s", m.Kernel)
	}
	b.WriteString("\n")
	if m.LoadBefore != "" {
		fmt.Fprintf(&b, "- load average (1/5/15 min): %s before, %s after\n", m.LoadBefore, m.LoadAfter)
	}
	if r.AA {
		b.WriteString("- **A/A run (-aa): the \"broker\" rows measure the baseline server too; the ratios show the noise floor**\n")
	}
	if r.Mode == "self" {
		acc := "no access rule"
		if r.SelfAccess {
			acc = "access rule ALLOW_UIDS=this user (-self-access)"
		}
		fmt.Fprintf(&b, "- broker: in-process (-self), wired as the daemon's serve: local provider, FileStore, api.NewMetrics, broker.New/Start, api.Listen/NewServer; credential %q, %s\n", r.Credential, acc)
	} else {
		fmt.Fprintf(&b, "- broker: %s, credential %q\n", r.Socket, r.Credential)
	}
	fmt.Fprintf(&b, "- baseline: bare net/http server (%s) on a Unix socket, the broker's answer byte for byte: %d-byte body, headers %s + Date, Content-Length\n",
		r.Settings.Baseline, r.AnswerBytes, strings.Join(r.AnswerHeaders, ", "))
	s := r.Settings
	order := "broker then baseline in every round (ABAB)"
	if s.Order == "abba" {
		order = "broker first in odd rounds, baseline first in even ones (AB BA ...)"
	}
	fmt.Fprintf(&b, "- load: closed loop, one keep-alive connection per client, %s reader; %s warm-up + %s measured per run; %d round(s) per client count, %s\n",
		s.Reader, s.Warmup, s.Duration, s.Rounds, order)
	fmt.Fprintf(&b, "- targets: throughput ratio >= %.2f, p99 ratio <= %.2f (median of the rounds' ratios; aggregate = all rounds pooled)\n",
		s.MinThroughputRatio, s.MaxP99Ratio)

	for _, c := range r.Results {
		fmt.Fprintf(&b, "\n## %d client(s)\n\n", c.Clients)
		b.WriteString("| target | req/s | p50 | p90 | p99 | max | errors | verdict |\n")
		b.WriteString("|---|---:|---:|---:|---:|---:|---:|---|\n")
		for _, t := range []TargetResult{c.Broker, c.Baseline} {
			fmt.Fprintf(&b, "| %s | %.0f | %s | %s | %s | %s | %d | |\n", t.Target, t.RPS,
				fmtUs(t.P50us), fmtUs(t.P90us), fmtUs(t.P99us), fmtUs(t.MaxUs), t.Errors)
		}
		var tr, pr []string
		for _, rr := range c.Rounds {
			tr = append(tr, fmt.Sprintf("%.3f", rr.ThroughputRatio))
			pr = append(pr, fmt.Sprintf("%.2f", rr.P99Ratio))
		}
		fmt.Fprintf(&b, "| throughput ratio (broker/baseline) | %.3f | | | | | | %s (target >= %.2f; rounds %s; aggregate %.3f) |\n",
			c.ThroughputRatio, verdict(c.ThroughputPass), s.MinThroughputRatio, strings.Join(tr, " "), c.AggregateThroughputRatio)
		fmt.Fprintf(&b, "| p99 ratio (broker/baseline) | | | | %.2f | | | %s (target <= %.2f; rounds %s; aggregate %.2f) |\n",
			c.P99Ratio, verdict(c.P99Pass), s.MaxP99Ratio, strings.Join(pr, " "), c.AggregateP99Ratio)
		if r.ServerCPUKnown {
			var cr []string
			for _, rr := range c.Rounds {
				cr = append(cr, fmt.Sprintf("%.3f", rr.ServerCPURatio))
			}
			fmt.Fprintf(&b, "| %s CPU/request ratio (broker/baseline) | %.3f | | | | | | info: %.1fµs vs %.1fµs; rounds %s; aggregate %.3f |\n",
				cpuScope(r), c.ServerCPURatio, c.Broker.ServerCPUPerReqUs, c.Baseline.ServerCPUPerReqUs, strings.Join(cr, " "), c.AggregateServerCPURatio)
		}
		if r.Mode == "self" {
			fmt.Fprintf(&b, "\nHeap allocations per request (whole process, measured windows): broker %.1f (%.0f B), baseline %.1f (%.0f B); GC cycles: broker %d, baseline %d\n",
				c.Broker.ProcessAllocsPerReq, c.Broker.ProcessBytesPerReq, c.Baseline.ProcessAllocsPerReq, c.Baseline.ProcessBytesPerReq,
				c.Broker.GCCycles, c.Baseline.GCCycles)
		}
		for _, t := range []TargetResult{c.Broker, c.Baseline} {
			if t.Errors > 0 {
				fmt.Fprintf(&b, "\n%s: %d failed request(s); first: %s\n", t.Target, t.Errors, t.FirstError)
			}
		}
	}
	overall := "PASS"
	if !r.Pass {
		overall = "FAIL"
	}
	fmt.Fprintf(&b, "\nOverall: %s\n", overall)
	_, err := io.WriteString(w, b.String())
	return err
}

// cpuScope names whose CPU the CPU/request row counts.
func cpuScope(r *Report) string {
	if r.BrokerInProcess {
		return "process (clients+server)"
	}
	return "server"
}

func verdict(ok bool) string {
	if ok {
		return "PASS"
	}
	return "FAIL"
}

func fmtUs(us float64) string { return fmtDur(time.Duration(us * float64(time.Microsecond))) }

func fmtDur(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%.1fµs", float64(d)/float64(time.Microsecond))
	case d < time.Second:
		return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.2fs", d.Seconds())
	}
}
