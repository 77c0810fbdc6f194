package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"time"
)

// TestMain lets the test binary act as the baseline child process, as the
// tool's own binary does.
func TestMain(m *testing.M) {
	if len(os.Args) == 2 && os.Args[1] == internalBaselineFlag {
		if err := serveBaselineChild(os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestSelf runs the whole tool in-process. The figures are measured, not
// asserted: only that both targets served, without errors, and that the
// report holds the ratio rows.
func TestSelf(t *testing.T) {
	for _, reader := range []string{"fast", "std"} {
		t.Run(reader, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			rep, err := run(ctx, []string{"-self", "-clients", "1,4", "-duration", "200ms", "-warmup", "50ms",
				"-rounds", "1", "-reader", reader}, &stdout, &stderr)
			if err != nil {
				t.Fatalf("run: %v\nstderr:\n%s", err, stderr.String())
			}
			if len(rep.Results) != 2 {
				t.Fatalf("%d results, want 2 (clients 1 and 4)", len(rep.Results))
			}
			for _, c := range rep.Results {
				for _, tr := range []TargetResult{c.Broker, c.Baseline} {
					if tr.Requests == 0 || tr.Errors != 0 {
						t.Errorf("clients %d, %s: %d requests, %d errors (first: %s)", c.Clients, tr.Target, tr.Requests, tr.Errors, tr.FirstError)
					}
				}
			}
			out := stdout.String()
			for _, want := range []string{"| throughput ratio (broker/baseline) |", "| p99 ratio (broker/baseline) |", "## 1 client(s)", "## 4 client(s)", "GOMAXPROCS"} {
				if !strings.Contains(out, want) {
					t.Errorf("report lacks %q:\n%s", want, out)
				}
			}
			if t.Failed() {
				t.Logf("stderr:\n%s", stderr.String())
			}
		})
	}
}

// TestSocketMode measures a broker in "another process" (here: started
// apart from run) through -socket, with the baseline in a child process.
func TestSocketMode(t *testing.T) {
	dir := t.TempDir()
	sb, err := startSelf(dir, true, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer sb.close()
	var stdout, stderr bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rep, err := run(ctx, []string{"-socket", sb.socket, "-name", selfName, "-clients", "2", "-duration", "200ms",
		"-warmup", "50ms", "-rounds", "1", "-json"}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("run: %v\nstderr:\n%s", err, stderr.String())
	}
	if rep.Settings.Baseline != "subprocess" {
		t.Errorf("baseline ran %s, want subprocess", rep.Settings.Baseline)
	}
	var decoded Report
	if err := json.Unmarshal(stdout.Bytes(), &decoded); err != nil {
		t.Fatalf("-json output: %v", err)
	}
	for _, tr := range []TargetResult{decoded.Results[0].Broker, decoded.Results[0].Baseline} {
		if tr.Requests == 0 || tr.Errors != 0 {
			t.Errorf("%s: %d requests, %d errors (first: %s)", tr.Target, tr.Requests, tr.Errors, tr.FirstError)
		}
	}
}

// TestFastReaderFraming feeds readFast the framings a server may use.
func TestFastReaderFraming(t *testing.T) {
	body := `{"access_token":"x","token_type":"Bearer"}`
	cases := map[string]struct {
		wire   string
		status int
		keep   bool
	}{
		"content-length": {"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\ncontent-length: 42\r\n\r\n" + body, 200, true},
		"chunked":        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n" + body[:16] + "\r\n1a;x=y\r\n" + body[16:] + "\r\n0\r\nTrailer: z\r\n\r\n", 200, true},
		"close":          {"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 42\r\n\r\n" + body, 200, false},
		"eof-delimited":  {"HTTP/1.0 200 OK\r\n\r\n" + body, 200, false},
		"interim":        {"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 42\r\n\r\n" + body, 200, true},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			k := &clientConn{}
			k.br = newTestReader(c.wire)
			status, keep, err := k.readFast()
			if err != nil || status != c.status || keep != c.keep || string(k.body) != body {
				t.Errorf("got %d keep=%v body %q err %v; want %d keep=%v body %q", status, keep, k.body, err, c.status, c.keep, body)
			}
		})
	}
	for name, wire := range map[string]string{
		"truncated": "HTTP/1.1 200 OK\r\nContent-Length: 42\r\n\r\n" + body[:10],
		"garbage":   "SSH-2.0-OpenSSH\r\n\r\n",
		"gzip":      "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			k := &clientConn{}
			k.br = newTestReader(wire)
			if _, _, err := k.readFast(); err == nil {
				t.Errorf("no error for %q", wire)
			}
		})
	}
}

func TestHistQuantiles(t *testing.T) {
	h := newHist()
	for i := 1; i <= 100000; i++ {
		h.record(time.Duration(i) * time.Microsecond / 10) // 100ns .. 10ms
	}
	for _, q := range []float64{0.5, 0.9, 0.99, 1} {
		want := time.Duration(q*100000) * time.Microsecond / 10
		got := h.quantile(q)
		if got < want || float64(got-want) > float64(want)/histSub {
			t.Errorf("quantile(%g) = %v, want %v within 1/%d", q, got, want, histSub)
		}
	}
	for v := uint64(0); v < 1<<histMaxBits; v = v*3/2 + 1 {
		if i := bucket(v); bucketHigh(i) < v || (i > 0 && bucketHigh(i-1) >= v) {
			t.Fatalf("value %d in bucket %d [%d, %d]", v, i, bucketHigh(i-1)+1, bucketHigh(i))
		}
	}
}

func newTestReader(s string) *bufio.Reader { return bufio.NewReader(strings.NewReader(s)) }
