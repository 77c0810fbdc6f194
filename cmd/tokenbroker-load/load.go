package main

import (
	"context"
	"fmt"
	"os"
	"runtime/metrics"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"time"
)

// runResult is one measurement of one target at one client count.
type runResult struct {
	ok       uint64 // successful requests completed in the measured window
	errors   uint64 // failed requests, warm-up included
	elapsed  time.Duration
	hist     *hist // latency of the successful requests
	firstErr string
	// This process's allocations and GC cycles in the measured window.
	allocs, allocBytes, gcs uint64
	// CPU time used in the measured window by this process and by the
	// server's (the same with -self); -1 when unknown.
	selfCPU, serverCPU time.Duration
}

// cpuDelta is b-a, or -1 when either is unknown.
func cpuDelta(a, b time.Duration) time.Duration {
	if a < 0 || b < 0 {
		return -1
	}
	return b - a
}

// procCounters reads this process's allocation and GC counters.
func procCounters() (allocs, bytes, gcs uint64) {
	s := []metrics.Sample{{Name: "/gc/heap/allocs:objects"}, {Name: "/gc/heap/allocs:bytes"}, {Name: "/gc/cycles/total:gc-cycles"}}
	metrics.Read(s)
	for i, v := range s {
		if v.Value.Kind() != metrics.KindUint64 {
			continue
		}
		switch i {
		case 0:
			allocs = v.Value.Uint64()
		case 1:
			bytes = v.Value.Uint64()
		case 2:
			gcs = v.Value.Uint64()
		}
	}
	return
}

const (
	phaseWarmup int32 = iota
	phaseMeasure
	phaseStop
)

// worker is one client: a goroutine with its own connection and histogram.
type worker struct {
	conn     *clientConn
	hist     *hist
	errors   uint64
	firstErr error
	_        [64]byte // keep workers' counters off each other's cache lines
}

// measure runs clients closed-loop clients against socket: each sends req,
// reads the whole answer, checks it and sends the next. Answers completed
// during warmup are not counted; then the window of length dur is.
// serverPID, when not 0, is the server's process, whose CPU time is read
// around the window.
func measure(ctx context.Context, targetName, socket string, serverPID int, req []byte, clients int, warmup, dur time.Duration, std bool) (*runResult, error) {
	workers := make([]*worker, clients)
	defer func() {
		for _, w := range workers {
			if w != nil && w.conn != nil {
				w.conn.close()
			}
		}
	}()
	// A stalled server must not hang the tool: one deadline per connection
	// for the whole run, not one per request.
	deadline := time.Now().Add(warmup + dur + 30*time.Second)
	for i := range workers {
		k, err := dialConn(socket, std, deadline)
		if err != nil {
			return nil, fmt.Errorf("%s: connecting client %d of %d: %w", targetName, i+1, clients, err)
		}
		workers[i] = &worker{conn: k, hist: newHist()}
	}

	var phase atomic.Int32
	var wg sync.WaitGroup
	labels := pprof.Labels("side", "client", "target", targetName)
	for _, w := range workers {
		wg.Add(1)
		go pprof.Do(ctx, labels, func(context.Context) {
			defer wg.Done()
			w.loop(&phase, req)
		})
	}

	stop := func() { phase.Store(phaseStop); wg.Wait() }
	if warmup > 0 {
		if err := sleep(ctx, warmup); err != nil {
			stop()
			return nil, err
		}
	}
	self := os.Getpid()
	if serverPID == 0 {
		serverPID = -1
	}
	a0, b0, g0 := procCounters()
	c0, s0 := processCPU(self), processCPU(serverPID)
	start := time.Now()
	phase.Store(phaseMeasure)
	err := sleep(ctx, dur)
	phase.Store(phaseStop)
	elapsed := time.Since(start)
	c1, s1 := processCPU(self), processCPU(serverPID)
	a1, b1, g1 := procCounters()
	wg.Wait()
	if err != nil {
		return nil, err
	}

	res := &runResult{elapsed: elapsed, hist: newHist(), allocs: a1 - a0, allocBytes: b1 - b0, gcs: g1 - g0,
		selfCPU: cpuDelta(c0, c1), serverCPU: cpuDelta(s0, s1)}
	for _, w := range workers {
		res.hist.merge(w.hist)
		res.errors += w.errors
		if res.firstErr == "" && w.firstErr != nil {
			res.firstErr = w.firstErr.Error()
		}
	}
	res.ok = res.hist.n
	return res, nil
}

func (w *worker) loop(phase *atomic.Int32, req []byte) {
	t0 := time.Now()
	for phase.Load() != phaseStop {
		reusable, err := w.conn.do(req)
		// One clock read per request: the end of one is the start of the next.
		t1 := time.Now()
		switch {
		case err == nil:
			if phase.Load() == phaseMeasure {
				w.hist.record(t1.Sub(t0))
			}
			if !reusable {
				w.conn.close() // the server closes it; the next request redials
			}
		case phase.Load() != phaseStop:
			w.errors++
			if w.firstErr == nil {
				w.firstErr = err
			}
			if !reusable {
				w.conn.close()
				time.Sleep(time.Millisecond) // a dead server must not turn this into a busy loop
			}
			t1 = time.Now()
		}
		t0 = t1
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
