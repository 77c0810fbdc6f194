package api_test

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/api"
	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/internal/tbtest/fakebroker"
)

// scrapeAfterTraffic counts some handouts and refreshes against the fake
// broker (svc and down, both firework) and returns /metrics.
func scrapeAfterTraffic(t *testing.T, opts api.MetricsOptions) string {
	t.Helper()
	m := api.NewMetrics(opts)
	// A refresh counted before the server knows its credential (the broker
	// starts before NewServer): counted once, never a duplicate series.
	m.Refreshed("svc", "firework", broker.ResultOK, time.Millisecond)
	h := api.NewServer(fakebroker.New(), api.Options{Logger: discard(), Metrics: m}).Handler()
	for range 3 {
		serveHTTP(h, "GET", "/v1/tokens/svc")
	}
	serveHTTP(h, "GET", "/v1/tokens/down")
	serveHTTP(h, "GET", "/v1/tokens/made-up-by-a-caller")
	m.Refreshed("svc", "firework", broker.ResultOK, 120*time.Millisecond)
	m.Refreshed("svc", "firework", broker.ResultTransient, time.Second)
	m.Refreshed("down", "firework", broker.ResultTransient, time.Second)
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
	for _, bad := range []string{fakebroker.SecretToken, "made-up-by-a-caller"} {
		if strings.Contains(text, bad) {
			t.Errorf("/metrics holds %q", bad)
		}
	}
	return text
}

// /metrics counts handouts and refreshes by provider, reads expiry and
// state per credential at scrape time, takes the engine's refresh events,
// and never holds a token or a caller-made name. A credential costs at
// most 8 series.
func TestMetrics(t *testing.T) {
	text := scrapeAfterTraffic(t, api.MetricsOptions{Version: "v1.2.3"})
	metricsHave(t, text,
		`tokenbroker_handouts_total{code="200",provider="firework"} 3`,
		`tokenbroker_handouts_total{code="503",provider="firework"} 1`,
		`tokenbroker_handouts_total{code="404",provider=""} 1`,
		`tokenbroker_refreshes_total{provider="firework",result="ok"} 2`,
		`tokenbroker_refreshes_total{provider="firework",result="transient"} 2`,
		`tokenbroker_refreshes_total{provider="firework",result="rejected"} 0`,
		`tokenbroker_refresh_duration_seconds_count{provider="firework"} 4`,
		`tokenbroker_lock_wait_seconds_count{outcome="acquired"} 1`,
		`tokenbroker_redis_errors_total 1`,
		`tokenbroker_provider_endpoints_failing{provider="firework"} 1`,
		`tokenbroker_provider_probes_total{provider="firework"} 2`,
		`tokenbroker_credential_state{credential="down",state="retrying"} 1`,
		`tokenbroker_credential_state{credential="svc",state="ok"} 1`,
		`tokenbroker_refresh_consecutive_failures{credential="down"} 2`,
		`tokenbroker_token_expires_in_seconds{credential="svc"} `,
		`tokenbroker_build_info{goversion="go`,
		`version="v1.2.3"`,
		`go_goroutines `,
	)
	perCredential := map[string]int{}
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, "tokenbroker_credential_handouts_total") || strings.HasPrefix(line, "tokenbroker_credential_refreshes_total") {
			t.Errorf("per-credential counter without the option: %s", line)
		}
		for _, name := range []string{"svc", "down"} {
			if strings.Contains(line, `credential="`+name+`"`) {
				perCredential[name]++
			}
		}
	}
	for name, n := range perCredential {
		if n > 8 {
			t.Errorf("credential %s has %d series; want at most 8", name, n)
		}
	}
}

// With PerCredential, handouts and refreshes are counted by credential too,
// and the per-provider totals stay.
func TestMetricsPerCredential(t *testing.T) {
	text := scrapeAfterTraffic(t, api.MetricsOptions{Version: "v1.2.3", PerCredential: true})
	metricsHave(t, text,
		`tokenbroker_credential_handouts_total{code="200",credential="svc"} 3`,
		`tokenbroker_credential_handouts_total{code="503",credential="down"} 1`,
		`tokenbroker_credential_handouts_total{code="404",credential=""} 1`,
		`tokenbroker_credential_refreshes_total{credential="svc",result="ok"} 2`,
		`tokenbroker_credential_refreshes_total{credential="svc",result="transient"} 1`,
		`tokenbroker_handouts_total{code="200",provider="firework"} 3`,
		`tokenbroker_refreshes_total{provider="firework",result="ok"} 2`,
	)
}

func metricsHave(t *testing.T, text string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(text, w) {
			t.Errorf("/metrics lacks %q", w)
		}
	}
}

// Without Metrics, /metrics is not served.
func TestNoMetrics(t *testing.T) {
	h := api.NewServer(fakebroker.New(), api.Options{Logger: discard()}).Handler()
	if w := serveHTTP(h, "GET", "/metrics"); w.Code != http.StatusNotFound {
		t.Errorf("GET /metrics without metrics: %d, want 404", w.Code)
	}
}
