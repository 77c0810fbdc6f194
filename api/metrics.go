package api

import (
	"net/http"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tokenbroker/tokenbroker/broker"
)

// Metrics are the broker's Prometheus metrics. It is a broker.Observer (pass
// it as broker.Options.Observer) and serves /metrics once given to a
// Server. Labels are credential names, providers, results and status codes:
// never a secret, and never a name a caller made up.
//
// A credential costs 7 series by default: its expiry, its state (one series
// per state) and its failures in a row, the ones an alert needs by name.
// Handouts and refreshes are counted per provider; per credential only with
// MetricsOptions.PerCredential, which adds 8 series a credential.
type Metrics struct {
	reg           *prometheus.Registry
	perCredential bool

	refreshTime  *prometheus.HistogramVec
	lockWait     *prometheus.HistogramVec
	redisErrors  prometheus.Counter
	unanswered   *prometheus.CounterVec
	accessDenied *prometheus.CounterVec
	failing      *prometheus.GaugeVec
	probes       *prometheus.CounterVec
	proxyCalls   *prometheus.CounterVec
	proxyRetries *prometheus.CounterVec

	// byName holds each credential's counters as plain atomics, made once,
	// so a handout counts with one map read and an atomic add, and 10k
	// credentials cost a few hundred KiB rather than a Prometheus series
	// object per label set. The counts collector exports them at scrape.
	// Unless counted per credential, the credentials of a provider share
	// one credCounts, byProvider's.
	byName     map[string]*credCounts
	byProvider map[string]*credCounts
	// rare counts what has no slot there: other status codes, and names
	// no credential has (labelled "").
	rareMu sync.Mutex
	rare   map[rareKey]*atomic.Uint64
}

// credCounts are the handout and refresh counts of one credential, or of
// every credential of a provider.
type credCounts struct {
	provider        string
	ok, unavailable atomic.Uint64
	results         [len(resultNames)]atomic.Uint64
}

type rareKey struct{ metric, credential, label string }

// resultNames are the refresh results, in credCounts.results order.
var resultNames = [...]broker.Result{broker.ResultOK, broker.ResultAdopted, broker.ResultPeer,
	broker.ResultTransient, broker.ResultReauthorize, broker.ResultRejected}

// MetricsOptions configure Metrics.
type MetricsOptions struct {
	// Version labels tokenbroker_build_info.
	Version string
	// PerCredential adds tokenbroker_credential_handouts_total and
	// tokenbroker_credential_refreshes_total, by credential: 8 more series
	// a credential.
	PerCredential bool
}

// NewMetrics returns the broker's metrics, with Go runtime, process and
// build-info collectors.
func NewMetrics(opts MetricsOptions) *Metrics {
	m := &Metrics{
		reg:           prometheus.NewRegistry(),
		perCredential: opts.PerCredential,
		refreshTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tokenbroker_refresh_duration_seconds",
			Help:    "Time a refresh attempt took, lock and provider request included, by provider.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"provider"}),
		lockWait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tokenbroker_lock_wait_seconds",
			Help:    "Time taken to take the refresh lock, by outcome (acquired, held, error).",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"outcome"}),
		redisErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tokenbroker_redis_errors_total",
			Help: "Redis commands that failed (a missing key is not a failure).",
		}),
		unanswered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenbroker_refresh_requests_unanswered_total",
			Help: "Sent requests spending a refresh token still unanswered after the request timeout (slow: awaited, not resent) or whose answer was lost (lost: the provider may have spent the token), by provider.",
		}, []string{"provider", "reason"}),
		accessDenied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenbroker_access_denied_total",
			Help: "Requests refused by the socket's access rules, by credential.",
		}, []string{"credential"}),
		failing: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tokenbroker_provider_endpoints_failing",
			Help: "Token endpoints of the provider that fail now (one probe per interval goes to each).",
		}, []string{"provider"}),
		probes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenbroker_provider_probes_total",
			Help: "Probe requests sent to a failing token endpoint of the provider.",
		}, []string{"provider"}),
		proxyCalls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenbroker_proxy_requests_total",
			Help: "Requests through the proxy, by credential and outcome: the upstream's status class (2xx to 5xx), unreachable (no answer came) or no_token (the broker had none to send).",
		}, []string{"credential", "class"}),
		proxyRetries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenbroker_proxy_retries_total",
			Help: "Proxied requests the upstream refused with 401 that were sent again with a fresh token, by credential.",
		}, []string{"credential"}),
		byName:     map[string]*credCounts{},
		byProvider: map[string]*credCounts{},
		rare:       map[rareKey]*atomic.Uint64{},
	}
	build := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "tokenbroker_build_info",
		Help:        "Always 1; labels name the running build.",
		ConstLabels: prometheus.Labels{"version": opts.Version, "goversion": runtime.Version()},
	})
	build.Set(1)
	m.reg.MustRegister(countsCollector{m}, m.refreshTime, m.lockWait, m.redisErrors, m.unanswered, m.accessDenied, m.failing, m.probes, m.proxyCalls, m.proxyRetries, build,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Refreshed implements broker.Observer.
func (m *Metrics) Refreshed(credential, provider string, result broker.Result, d time.Duration) {
	if cc := m.byName[credential]; cc != nil {
		for i, r := range resultNames {
			if r == result {
				cc.results[i].Add(1)
				break
			}
		}
	} else {
		m.rareCount(refreshesDesc, credential, string(result))
	}
	m.refreshTime.WithLabelValues(provider).Observe(d.Seconds())
}

// LockWaited implements broker.Observer.
func (m *Metrics) LockWaited(_ string, d time.Duration, outcome string) {
	m.lockWait.WithLabelValues(outcome).Observe(d.Seconds())
}

// RequestSlow implements broker.Observer.
func (m *Metrics) RequestSlow(provider string) { m.unanswered.WithLabelValues(provider, "slow").Inc() }

// AnswerLost implements broker.Observer.
func (m *Metrics) AnswerLost(provider string) { m.unanswered.WithLabelValues(provider, "lost").Inc() }

// Endpoint implements broker.Observer.
func (m *Metrics) Endpoint(provider string, event broker.EndpointEvent) {
	switch event {
	case broker.EndpointFailing:
		m.failing.WithLabelValues(provider).Inc()
	case broker.EndpointRecovered:
		m.failing.WithLabelValues(provider).Dec()
	case broker.EndpointProbe:
		m.probes.WithLabelValues(provider).Inc()
	}
}

// RedisError counts one failed Redis command.
func (m *Metrics) RedisError() { m.redisErrors.Inc() }

// Handler serves the metrics in the Prometheus exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorLog: nil})
}

// track registers b's per-credential state and makes the handout counters
// still missing. A Server calls it once.
func (m *Metrics) track(b Broker) {
	for _, st := range b.Status() {
		m.AddCredential(st.Name, st.Provider)
	}
	m.reg.MustRegister(&statusCollector{b: b})
}

// AddCredential makes the counters of a credential of provider. Call it
// before the broker starts: its first refreshes are counted at once, and
// the counters are read without a lock. NewServer adds any name still
// missing.
func (m *Metrics) AddCredential(name, provider string) {
	if m.byName[name] != nil {
		return
	}
	if m.perCredential {
		m.byName[name] = &credCounts{provider: provider}
		return
	}
	cc := m.byProvider[provider]
	if cc == nil {
		cc = &credCounts{provider: provider}
		m.byProvider[provider] = cc
	}
	m.byName[name] = cc
}

// handout counts one answer to a token request.
func (m *Metrics) handout(name string, code int) {
	if m == nil {
		return
	}
	cc := m.byName[name]
	switch {
	case cc == nil:
		m.rareCount(handoutsDesc, "", strconv.Itoa(code))
	case code == http.StatusOK:
		cc.ok.Add(1)
	case code == http.StatusServiceUnavailable:
		cc.unavailable.Add(1)
	default:
		m.rareCount(handoutsDesc, name, strconv.Itoa(code))
	}
}

// rareCount counts one event that has no per-credential slot.
func (m *Metrics) rareCount(d *prometheus.Desc, credential, label string) {
	k := rareKey{d.String(), credential, label}
	m.rareMu.Lock()
	c := m.rare[k]
	if c == nil {
		c = new(atomic.Uint64)
		m.rare[k] = c
	}
	m.rareMu.Unlock()
	c.Add(1)
}

var (
	handoutsDesc = prometheus.NewDesc("tokenbroker_handouts_total",
		"Token requests answered, by provider and HTTP status code (provider is empty for unknown names).",
		[]string{"provider", "code"}, nil)
	refreshesDesc = prometheus.NewDesc("tokenbroker_refreshes_total",
		"Refresh attempts by provider and result (ok, adopted, peer, transient, reauthorize, rejected).",
		[]string{"provider", "result"}, nil)
	credHandoutsDesc = prometheus.NewDesc("tokenbroker_credential_handouts_total",
		"Token requests answered, by credential and HTTP status code (credential is empty for unknown names); only with per-credential metrics on.",
		[]string{"credential", "code"}, nil)
	credRefreshesDesc = prometheus.NewDesc("tokenbroker_credential_refreshes_total",
		"Refresh attempts by credential and result; only with per-credential metrics on.",
		[]string{"credential", "result"}, nil)
)

// countsCollector exports the handout and refresh counts: per provider,
// and per credential when asked.
type countsCollector struct{ m *Metrics }

func (c countsCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- handoutsDesc
	ch <- refreshesDesc
	if c.m.perCredential {
		ch <- credHandoutsDesc
		ch <- credRefreshesDesc
	}
}

// countKey is one exported count: by provider or by credential, and a
// code or result.
type countKey struct{ by, label string }

func (c countsCollector) Collect(ch chan<- prometheus.Metric) {
	handouts, refreshes := map[countKey]uint64{}, map[countKey]uint64{}
	var credHandouts, credRefreshes map[countKey]uint64
	if c.m.perCredential {
		credHandouts, credRefreshes = map[countKey]uint64{}, map[countKey]uint64{}
	}
	add := func(perProvider, perCredential map[countKey]uint64, provider, credential, label string, v uint64) {
		perProvider[countKey{provider, label}] += v
		if perCredential != nil {
			perCredential[countKey{credential, label}] += v
		}
	}
	counts := c.m.byProvider // shared: the name is never read
	if c.m.perCredential {
		counts = c.m.byName
	}
	for name, cc := range counts {
		add(handouts, credHandouts, cc.provider, name, "200", cc.ok.Load())
		add(handouts, credHandouts, cc.provider, name, "503", cc.unavailable.Load())
		for i, r := range resultNames {
			add(refreshes, credRefreshes, cc.provider, name, string(r), cc.results[i].Load())
		}
	}
	// A count made before its credential had a slot (a refresh counted
	// before NewServer, without AddCredential) joins the slot's, so no
	// label set is exported twice.
	c.m.rareMu.Lock()
	for k, v := range c.m.rare {
		provider := ""
		if cc := c.m.byName[k.credential]; cc != nil {
			provider = cc.provider
		}
		if k.metric == refreshesDesc.String() {
			add(refreshes, credRefreshes, provider, k.credential, k.label, v.Load())
		} else {
			add(handouts, credHandouts, provider, k.credential, k.label, v.Load())
		}
	}
	c.m.rareMu.Unlock()
	for _, e := range []struct {
		d *prometheus.Desc
		m map[countKey]uint64
	}{{handoutsDesc, handouts}, {refreshesDesc, refreshes}, {credHandoutsDesc, credHandouts}, {credRefreshesDesc, credRefreshes}} {
		for k, v := range e.m {
			ch <- prometheus.MustNewConstMetric(e.d, prometheus.CounterValue, float64(v), k.by, k.label)
		}
	}
}

func (m *Metrics) denied(name string) {
	if m == nil {
		return
	}
	if m.byName[name] == nil {
		name = ""
	}
	m.accessDenied.WithLabelValues(name).Inc()
}

// proxied counts one proxied request of name, a configured credential.
func (m *Metrics) proxied(name, class string) {
	if m != nil {
		m.proxyCalls.WithLabelValues(name, class).Inc()
	}
}

// proxyRetried counts one retry after an upstream 401.
func (m *Metrics) proxyRetried(name string) {
	if m != nil {
		m.proxyRetries.WithLabelValues(name).Inc()
	}
}

// statusCollector reads every credential's condition at scrape time.
type statusCollector struct{ b Broker }

var (
	expiresInDesc = prometheus.NewDesc("tokenbroker_token_expires_in_seconds",
		"Seconds until the credential's current access token expires (negative once expired; absent before the first token).",
		[]string{"credential"}, nil)
	stateDesc = prometheus.NewDesc("tokenbroker_credential_state",
		"1 for the credential's current state (pending, ok, retrying, reauthorize, rejected), 0 for the others.",
		[]string{"credential", "state"}, nil)
	failuresDesc = prometheus.NewDesc("tokenbroker_refresh_consecutive_failures",
		"Refresh failures in a row since the last success.", []string{"credential"}, nil)
)

var states = []broker.State{broker.StatePending, broker.StateOK, broker.StateRetrying, broker.StateReauthorize, broker.StateRejected}

func (c *statusCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- expiresInDesc
	ch <- stateDesc
	ch <- failuresDesc
}

func (c *statusCollector) Collect(ch chan<- prometheus.Metric) {
	now := time.Now()
	for _, st := range c.b.Status() {
		if !st.ExpiresAt.IsZero() {
			ch <- prometheus.MustNewConstMetric(expiresInDesc, prometheus.GaugeValue, st.ExpiresAt.Sub(now).Seconds(), st.Name)
		}
		for _, s := range states {
			v := 0.0
			if st.State == s {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(stateDesc, prometheus.GaugeValue, v, st.Name, string(s))
		}
		ch <- prometheus.MustNewConstMetric(failuresDesc, prometheus.GaugeValue, float64(st.Failures), st.Name)
	}
}
