package api_test

import (
	"context"
	"fmt"
	"github.com/tokenbroker/tokenbroker/internal/tbtest"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/api"
)

// BenchmarkProxyOverhead measures a request through the proxy against the
// same request sent straight to the upstream with the token, side by side:
// each client alternates the two (direct first on even rounds, proxied
// first on odd ones), one keep-alive connection each way per client. It
// reports p50 and p99 of both and their ratios (proxied/direct).
//
//	go test -run '^$' -bench ProxyOverhead -benchtime 5000x ./api
func BenchmarkProxyOverhead(b *testing.B) {
	br := &rotatingBroker{}
	token := br.current()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+token {
			http.Error(w, "invalid token", http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"id":"123","title":"a video","duration":61}`)
	}))
	defer up.Close()
	target, _ := api.ParseUpstream(up.URL)
	path := filepath.Join(tbtest.ShortDir(b), "tb.sock")
	opts := api.Options{Path: path, Logger: discard(), Upstreams: map[string]api.Upstream{"svc": {URL: target}}}
	l, err := api.Listen(opts)
	if err != nil {
		b.Fatal(err)
	}
	srv := api.NewServer(br, opts)
	go srv.Serve(l)
	defer srv.Shutdown(context.Background())

	for _, clients := range []int{1, 16} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			direct := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: clients}}
			proxied := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: clients,
				DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
					return (&net.Dialer{}).DialContext(ctx, "unix", path)
				}}}
			call := func(c *http.Client, url string, hdr string) time.Duration {
				req, _ := http.NewRequest("GET", url, nil)
				if hdr == "" {
					req.Header.Set("X-Tokenbroker", "1")
				} else {
					req.Header.Set("Authorization", hdr)
				}
				start := time.Now()
				resp, err := c.Do(req)
				if err != nil {
					b.Error(err)
					return 0
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				d := time.Since(start)
				if resp.StatusCode != 200 {
					b.Errorf("%s: %d", url, resp.StatusCode)
				}
				return d
			}
			var mu sync.Mutex
			var ds, ps []time.Duration
			var wg sync.WaitGroup
			b.ResetTimer()
			for range clients {
				wg.Go(func() {
					d, p := make([]time.Duration, 0, b.N), make([]time.Duration, 0, b.N)
					for i := range b.N {
						if i%2 == 0 {
							d = append(d, call(direct, up.URL+"/api/v1/videos/123", "Bearer "+token))
							p = append(p, call(proxied, "http://tokenbroker/v1/proxy/svc/api/v1/videos/123", ""))
						} else {
							p = append(p, call(proxied, "http://tokenbroker/v1/proxy/svc/api/v1/videos/123", ""))
							d = append(d, call(direct, up.URL+"/api/v1/videos/123", "Bearer "+token))
						}
					}
					mu.Lock()
					ds, ps = append(ds, d...), append(ps, p...)
					mu.Unlock()
				})
			}
			wg.Wait()
			b.StopTimer()
			slices.Sort(ds)
			slices.Sort(ps)
			q := func(s []time.Duration, f float64) float64 { return float64(s[int(f*float64(len(s)-1))].Microseconds()) }
			b.ReportMetric(q(ds, .5), "direct-p50-µs")
			b.ReportMetric(q(ps, .5), "proxy-p50-µs")
			b.ReportMetric(q(ps, .5)/q(ds, .5), "p50-ratio")
			b.ReportMetric(q(ds, .99), "direct-p99-µs")
			b.ReportMetric(q(ps, .99), "proxy-p99-µs")
			b.ReportMetric(q(ps, .99)/q(ds, .99), "p99-ratio")
			direct.CloseIdleConnections()
			proxied.CloseIdleConnections()
		})
	}
}
