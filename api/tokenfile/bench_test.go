package tokenfile

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/broker/store/file"
	"github.com/tokenbroker/tokenbroker/sources"
	"github.com/tokenbroker/tokenbroker/sources/oauthtest"
)

// BenchmarkUpdateDelay measures how long after a refresh the token file
// holds the new token, as a reader watching the directory with inotify sees
// it: from the broker publishing the token (the refresh is saved) to the
// rename, and from the start of the refresh (a provider on loopback, the
// state file's fsync) to the rename. It reports p50 and p99 of each.
//
//	go test -run '^$' -bench UpdateDelay -benchtime 500x ./api/tokenfile
func BenchmarkUpdateDelay(b *testing.B) {
	p := oauthtest.StartTest(b, oauthtest.Options{})
	p.AddClient(oauthtest.Client{ID: "bench", Secret: "bench-secret"})
	d, _ := sources.Preset("generic", sources.ClientCredentials)
	d.TokenURL = p.TokenURL(oauthtest.Generic)
	src, err := sources.New(sources.ClientCredentials, &sources.Endpoint{Dialect: &d, HTTP: &http.Client{Timeout: 5 * time.Second},
		Client: sources.Client{ID: "bench"}}, "", sources.StaticSecrets(sources.Secrets{ClientSecret: sources.NewSecret("bench-secret")}))
	if err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	path := filepath.Join(dir, "tokens", "fw")
	w, err := New(map[string]File{"fw": {Path: path}}, quiet)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	var publishedAt atomic.Int64
	store, err := file.Open(filepath.Join(dir, "state"))
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	br, err := broker.New(broker.Options{Store: store, Logger: quiet, Published: func(name string, h broker.Handout, until time.Time) {
		publishedAt.Store(time.Now().UnixNano())
		w.Published(name, h, until)
	}}, []broker.Credential{{Name: "fw", Provider: "generic", Source: src, Fingerprint: "bench"}})
	if err != nil {
		b.Fatal(err)
	}
	if err := br.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	defer br.Close()
	if _, err := br.Token(context.Background(), "fw"); err != nil {
		b.Fatal(err)
	}

	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC)
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Close(fd)
	if _, err := unix.InotifyAddWatch(fd, filepath.Dir(path), unix.IN_MOVED_TO); err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 64<<10)
	drain := func() { // events of the writes so far
		for {
			var set unix.FdSet
			set.Set(fd)
			if n, _ := unix.Select(fd+1, &set, nil, nil, &unix.Timeval{Usec: 200000}); n <= 0 {
				return
			}
			_, _ = unix.Read(fd, buf)
		}
	}
	drain()
	fromPublish, fromRefresh := make([]time.Duration, 0, b.N), make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		if err := br.Refresh(context.Background(), "fw"); err != nil {
			b.Fatal(err)
		}
		if _, err := unix.Read(fd, buf); err != nil { // the rename
			b.Fatal(err)
		}
		seen := time.Now()
		fromPublish = append(fromPublish, seen.Sub(time.Unix(0, publishedAt.Load())))
		fromRefresh = append(fromRefresh, seen.Sub(start))
		h, _ := br.Token(context.Background(), "fw")
		if got, _ := os.ReadFile(path); strings.TrimSpace(string(got)) != h.AccessToken.Reveal() {
			b.Fatal("the file does not hold the token handed out")
		}
	}
	b.StopTimer()
	for _, m := range []struct {
		name string
		d    []time.Duration
	}{{"publish-to-file", fromPublish}, {"refresh-to-file", fromRefresh}} {
		slices.Sort(m.d)
		b.ReportMetric(float64(m.d[len(m.d)/2].Microseconds()), m.name+"-p50-µs")
		b.ReportMetric(float64(m.d[len(m.d)*99/100].Microseconds()), m.name+"-p99-µs")
	}
}
