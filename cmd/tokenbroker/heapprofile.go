//go:build heapprofile

package main

// Built only with -tags heapprofile (the scale test does so): on SIGUSR2
// the daemon writes a heap profile to $TB_HEAPPROFILE, so the daemon's
// own memory can be profiled from outside. Release builds have no such
// hook.

import (
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"syscall"
)

func init() {
	path := os.Getenv("TB_HEAPPROFILE")
	if path == "" {
		return
	}
	// Finer than the default 512 KiB, for a profile of small objects; it
	// costs some memory of its own, so measure RSS without it.
	runtime.MemProfileRate = 4096
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGUSR2)
	go func() {
		for range sig {
			// Renamed into place, so a reader never sees half a profile.
			if f, err := os.Create(path + ".tmp"); err == nil {
				_ = pprof.Lookup("heap").WriteTo(f, 0)
				_ = f.Close()
				_ = os.Rename(path+".tmp", path)
			}
			var m runtime.MemStats
			runtime.ReadMemStats(&m)
			_ = os.WriteFile(path+".memstats", fmt.Appendf(nil,
				"heap in use %d, idle %d, released %d; stacks %d; spans %d; GC metadata %d; other %d; next GC %d; sys %d\n",
				m.HeapInuse, m.HeapIdle, m.HeapReleased, m.StackInuse, m.MSpanInuse, m.GCSys, m.OtherSys, m.NextGC, m.Sys), 0o644)
		}
	}()
}
