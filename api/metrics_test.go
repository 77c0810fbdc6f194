package api_test

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/api"
	"github.com/tokenbroker/tokenbroker/broker"
)

// /metrics counts handouts by credential and code, reads expiry and state
// at scrape time, takes the engine's refresh events, and never holds a
// token or a caller-made name.
func TestMetrics(t *testing.T) {
	m := api.NewMetrics("v1.2.3")
	// A refresh counted before the server knows its credential (the broker
	// starts before NewServer): counted once, never a duplicate series.
	m.Refreshed("svc", "firework", broker.ResultOK, time.Millisecond)
	h := api.NewServer(newFake(), api.Options{Logger: discard(), Metrics: m}).Handler()
	for range 3 {
		serveHTTP(h, "GET", "/v1/tokens/svc")
	}
	serveHTTP(h, "GET", "/v1/tokens/down")
	serveHTTP(h, "GET", "/v1/tokens/made-up-by-a-caller")
	m.Refreshed("svc", "firework", broker.ResultOK, 120*time.Millisecond)
	m.Refreshed("svc", "firework", broker.ResultTransient, time.Second)
	m.LockWaited("svc", time.Millisecond, "acquired")
	m.RedisError()
	m.Endpoint("firework", broker.EndpointFailing)
	m.Endpoint("firework", broker.EndpointProbe)
	m.Endpoint("firework", broker.EndpointProbe)

	w := serveHTTP(h, "GET", "/metrics")
	body, _ := io.ReadAll(w.Body)
	text := string(body)
	if w.Code != http.StatusOK {
		t.Fatalf("GET /metrics: %d %s", w.Code, text)
	}
	for _, want := range []string{
		`tokenbroker_handouts_total{code="200",credential="svc"} 3`,
		`tokenbroker_handouts_total{code="503",credential="down"} 1`,
		`tokenbroker_handouts_total{code="404",credential=""} 1`,
		`tokenbroker_refreshes_total{credential="svc",result="ok"} 2`,
		`tokenbroker_refreshes_total{credential="svc",result="transient"} 1`,
		`tokenbroker_refresh_duration_seconds_count{provider="firework"} 3`,
		`tokenbroker_lock_wait_seconds_count{outcome="acquired"} 1`,
		`tokenbroker_redis_errors_total 1`,
		`tokenbroker_provider_endpoints_failing{provider="firework"} 1`,
		`tokenbroker_provider_probes_total{provider="firework"} 2`,
		`tokenbroker_credential_state{credential="down",state="retrying"} 1`,
		`tokenbroker_credential_state{credential="svc",state="ok"} 1`,
		`tokenbroker_token_expires_in_seconds{credential="svc"} `,
		`tokenbroker_build_info{goversion="go`,
		`go_goroutines `,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	for _, bad := range []string{secretToken, "made-up-by-a-caller"} {
		if strings.Contains(text, bad) {
			t.Errorf("/metrics holds %q", bad)
		}
	}
}

// Without Metrics, /metrics is not served.
func TestNoMetrics(t *testing.T) {
	h := api.NewServer(newFake(), api.Options{Logger: discard()}).Handler()
	if w := serveHTTP(h, "GET", "/metrics"); w.Code != http.StatusNotFound {
		t.Errorf("GET /metrics without metrics: %d, want 404", w.Code)
	}
}
