package api

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/sources"
)

// hotBroker hands out one token for "svc", 503 for "down", panics for
// "panic" and knows no other name.
type hotBroker struct{ tok broker.Handout }

// hotRetryAt and hotExpiry are fixed, so that two servers' answers
// compared across a second boundary still say the same times.
var (
	hotRetryAt = time.Now().Add(time.Hour)
	hotExpiry  = time.Now().Add(time.Hour)
)

func (b *hotBroker) Token(_ context.Context, name string) (broker.Handout, error) {
	switch name {
	case "svc":
		return b.tok, nil
	case "down":
		return broker.Handout{}, &broker.UnavailableError{Name: name, State: broker.StateRetrying, RetryAt: hotRetryAt}
	case "panic":
		panic("hotBroker panics for " + name)
	}
	return broker.Handout{}, fmt.Errorf("%w %q", broker.ErrUnknownCredential, name)
}
func (b *hotBroker) Status() []broker.Status {
	return []broker.Status{{Name: "down"}, {Name: "svc"}, {Name: "closed"}}
}
func (b *hotBroker) Refresh(context.Context, string) error { return nil }
func (b *hotBroker) BeginAuthorization(string) (broker.AuthRequest, error) {
	return broker.AuthRequest{}, broker.ErrNotAuthorizable
}
func (b *hotBroker) CompleteAuthorization(context.Context, string, string, string) (broker.Status, error) {
	return broker.Status{}, broker.ErrNotAuthorizable
}

// A realistic handout: a Firework-like JWT of 250 bytes.
var benchJWT = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9." + strings.Repeat("eyJzY29wZSI6InZpZGVvczp3cml0ZSJ9", 6) + ".c2lnbmF0dXJlLXNpZ25hdHVyZS1zaWduYXR1cmUtc2lnbmF0dXJl"

func newHotServer(log *slog.Logger) (*Server, *Metrics) {
	m := NewMetrics(MetricsOptions{Version: "test", PerCredential: true})
	b := &hotBroker{tok: broker.Handout{AccessToken: sources.NewSecret(benchJWT), Expiry: hotExpiry}}
	return NewServer(b, Options{Logger: log, Metrics: m, Access: map[string]Access{
		"svc": {}, "closed": {Set: true, UIDs: []uint32{12345}},
	}}), m
}

// The handout fast path answers exactly as the routed way (the header check,
// cleanPathsOnly, ServeMux) does, for the requests it takes and for those
// it leaves: status, headers, body, the access log line and the metrics.
func TestFastPathAnswersAsTheMux(t *testing.T) {
	var fastLog, slowLog bytes.Buffer
	debug := &slog.HandlerOptions{Level: slog.LevelDebug, ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey || a.Key == "duration" || a.Key == "stack" {
			return slog.Attr{}
		}
		return a
	}}
	fast, fm := newHotServer(slog.New(slog.NewJSONHandler(&fastLog, debug)))
	slowSrv, sm := newHotServer(slog.New(slog.NewJSONHandler(&slowLog, debug)))
	slow := guard(slowSrv.log, slowSrv.routed) // the routed way only
	targets := []string{
		"/v1/tokens/svc", "/v1/tokens/down", "/v1/tokens/nope", "/v1/tokens/closed", "/v1/tokens/panic",
		"/v1/tokens/%73vc", "/v1/tokens/sv%63", "/v1%2Ftokens/svc", "/v1/tokens/svc?x=1", "/v1/tokens/svc/",
		"/v1/tokens//svc", "/v1/tokens/./svc", "/v1/tokens/../tokens/svc", "/v1/tokens/SVC", "/v1/tokens/",
		"/v1/tokens/" + strings.Repeat("a", 64), "/v1/tokens/" + strings.Repeat("a", 65), "/v1/tokens/svc/refresh",
		"/V1/tokens/svc", "//v1/tokens/svc", "/v1/tokens/a%2Fb", "/healthz", "/v1/credentials", "http://x/v1/tokens/svc",
	}
	headers := [][]string{{"1"}, nil, {"2"}, {"1", "1"}, {""}}
	for _, method := range []string{"GET", "HEAD", "POST"} {
		for _, target := range targets {
			for _, hv := range headers {
				var got [2]*httptest.ResponseRecorder
				var patterns, names [2]string
				for i, h := range []http.Handler{fast.Handler(), slow} {
					r := httptest.NewRequest(method, target, nil)
					if hv != nil {
						r.Header["X-Tokenbroker"] = hv
					}
					got[i] = httptest.NewRecorder()
					h.ServeHTTP(got[i], r)
					patterns[i], names[i] = r.Pattern, r.PathValue("name")
				}
				what := fmt.Sprintf("%s %s X-Tokenbroker %q", method, target, hv)
				f, s := got[0], got[1]
				delete(f.Header(), "Retry-After") // a time; compared below by presence
				hadRA := s.Header().Get("Retry-After") != ""
				delete(s.Header(), "Retry-After")
				if f.Code != s.Code || !bytes.Equal(expiresFree(f.Body.Bytes()), expiresFree(s.Body.Bytes())) ||
					fmt.Sprint(f.Header()) != fmt.Sprint(s.Header()) || hadRA != (s.Code == 503) {
					t.Errorf("%s:\n fast %d %v %s\n mux  %d %v %s", what, f.Code, f.Header(), f.Body, s.Code, s.Header(), s.Body)
				}
				// The fast path names the route but does not set the path
				// value (see dispatch).
				if fastTaken := names[0] == "" && names[1] != ""; patterns[0] != patterns[1] ||
					(names[0] != names[1] && !(fastTaken && method == "GET" && f.Code != 400)) {
					t.Errorf("%s: fast left Pattern %q name %q; mux %q %q", what, patterns[0], names[0], patterns[1], names[1])
				}
			}
		}
	}
	if fastLog.String() != slowLog.String() {
		t.Errorf("logs differ:\nfast:\n%s\nmux:\n%s", fastLog.String(), slowLog.String())
	}
	fmx, smx := scrape(t, fm), scrape(t, sm)
	if fmx != smx {
		t.Errorf("metrics differ:\nfast:\n%s\nmux:\n%s", fmx, smx)
	}
}

// FuzzFastPath checks, for any request line and X-Tokenbroker value, that
// the server answers as the routed way alone does.
func FuzzFastPath(f *testing.F) {
	for _, s := range []string{"/v1/tokens/svc", "/v1/tokens/%73vc", "/v1/tokens/down", "/v1/tokens/nope", "/v1/tokens/closed",
		"/v1/tokens//svc", "/v1/tokens/svc/", "/v1%2ftokens/svc", "http://h/v1/tokens/svc?x", "/v1/tokens/../svc", "*"} {
		f.Add(uint8(0), s, "1")
		f.Add(uint8(1), s, "1")
		f.Add(uint8(0), s, "")
	}
	log := slog.New(slog.DiscardHandler)
	fast, _ := newHotServer(log)
	ref, _ := newHotServer(log)
	slow := guard(log, ref.routed)
	methods := []string{"GET", "HEAD", "POST", "PUT", "OPTIONS"}
	f.Fuzz(func(t *testing.T, m uint8, target, hv string) {
		if target == "/v1/tokens/panic" {
			return // logs a stack; TestFastPathAnswersAsTheMux covers it
		}
		raw := methods[int(m)%len(methods)] + " " + target + " HTTP/1.1\r\nHost: tokenbroker\r\nX-Tokenbroker: " + hv + "\r\n\r\n"
		var got [2]*httptest.ResponseRecorder
		for i, h := range []http.Handler{fast.Handler(), slow} {
			r, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw)))
			if err != nil {
				return
			}
			got[i] = httptest.NewRecorder()
			h.ServeHTTP(got[i], r)
		}
		f, s := got[0], got[1]
		delete(f.Header(), "Retry-After")
		delete(s.Header(), "Retry-After")
		if f.Code != s.Code || !bytes.Equal(expiresFree(f.Body.Bytes()), expiresFree(s.Body.Bytes())) || fmt.Sprint(f.Header()) != fmt.Sprint(s.Header()) {
			t.Errorf("%q:\n fast %d %v %s\n mux  %d %v %s", raw, f.Code, f.Header(), f.Body, s.Code, s.Header(), s.Body)
		}
	})
}

// expiresFree drops expires_in, which may tick between the two answers.
func expiresFree(b []byte) []byte {
	i := bytes.Index(b, []byte(`"expires_in":`))
	if i < 0 {
		return b
	}
	j := bytes.IndexByte(b[i:], ',')
	return append(slices.Clone(b[:i]), b[i+j:]...)
}

func scrape(t *testing.T, m *Metrics) string {
	t.Helper()
	w := httptest.NewRecorder()
	m.Handler().ServeHTTP(w, httptest.NewRequest("GET", "/metrics", nil))
	var keep []string
	for l := range strings.Lines(w.Body.String()) {
		if strings.HasPrefix(l, "tokenbroker_handouts_total") || strings.HasPrefix(l, "tokenbroker_credential_handouts_total") || strings.HasPrefix(l, "tokenbroker_access_denied_total") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "")
}

func TestAppendRFC3339UTC(t *testing.T) {
	zones := []*time.Location{time.UTC, time.FixedZone("x", -11*3600-1800), time.FixedZone("y", 14*3600)}
	check := func(tm time.Time) {
		t.Helper()
		want := tm.UTC().AppendFormat(nil, time.RFC3339)
		if got := appendRFC3339UTC(nil, tm); !bytes.Equal(got, want) {
			t.Errorf("appendRFC3339UTC(%v) = %s; want %s", tm, got, want)
		}
	}
	for _, y := range []int{-1, 0, 1, 9, 99, 999, 1969, 1970, 2000, 2024, 2026, 2100, 9999, 10000, 275000} {
		for _, z := range zones {
			check(time.Date(y, 12, 31, 23, 59, 59, 999999999, z))
			check(time.Date(y, 1, 1, 0, 0, 0, 0, z))
		}
	}
	check(time.Time{})
	rng := rand.New(rand.NewPCG(1, 2))
	for range 100000 {
		check(time.Unix(rng.Int64N(1<<36)-1<<35, rng.Int64N(1e9)).In(zones[rng.IntN(len(zones))]))
	}
}

// plainPrefix finds the first byte needing a look exactly, whatever the
// word boundaries and neighbours (borrows in the word test).
func TestPlainPrefix(t *testing.T) {
	naive := func(s string) int {
		for i := 0; i < len(s); i++ {
			if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c >= utf8.RuneSelf {
				return i
			}
		}
		return len(s)
	}
	fills := []byte{'a', 0x20, 0x21, 0x23, 0x5b, 0x5d, 0x7f, '~'}
	for n := 0; n <= 24; n++ {
		for _, fill := range fills {
			base := bytes.Repeat([]byte{fill}, n)
			if got := plainPrefix(string(base)); got != n {
				t.Fatalf("plainPrefix(%q) = %d; want %d", base, got, n)
			}
			for pos := 0; pos < n; pos++ {
				for c := 0; c < 256; c++ {
					s := slices.Clone(base)
					s[pos] = byte(c)
					if got, want := plainPrefix(string(s)), naive(string(s)); got != want {
						t.Fatalf("plainPrefix(%q) = %d; want %d", s, got, want)
					}
				}
			}
		}
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for range 200000 {
		b := make([]byte, rng.IntN(40))
		for i := range b {
			b[i] = byte(0x20 + rng.IntN(0x60))
			if rng.IntN(16) == 0 {
				b[i] = byte(rng.IntN(256))
			}
		}
		if got, want := plainPrefix(string(b)), naive(string(b)); got != want {
			t.Fatalf("plainPrefix(%q) = %d; want %d", b, got, want)
		}
	}
}

// BenchmarkAppendHandout measures encoding a realistic answer (a 250-byte
// JWT), which must not allocate.
func BenchmarkAppendHandout(b *testing.B) {
	now := time.Now()
	h := broker.Handout{AccessToken: sources.NewSecret(benchJWT), Expiry: now.Add(time.Hour)}
	buf := make([]byte, 0, 1024)
	b.ReportAllocs()
	b.SetBytes(int64(len(benchJWT)))
	for b.Loop() {
		buf = appendHandout(buf[:0], h, now)
	}
}

// BenchmarkHandoutWired is BenchmarkHandout's handler case wired as the
// daemon is: metrics on and an access map that holds the credential.
func BenchmarkHandoutWired(b *testing.B) {
	s, _ := newHotServer(slog.New(slog.DiscardHandler))
	h := s.Handler()
	r := httptest.NewRequest("GET", "/v1/tokens/svc", nil)
	r.Header.Set("X-Tokenbroker", "1")
	w := &nullWriter{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		clear(w.h)
		h.ServeHTTP(w, r)
		if w.status != 200 {
			b.Fatalf("status %d", w.status)
		}
	}
}

type nullWriter struct {
	h      http.Header
	status int
}

func (w *nullWriter) Header() http.Header         { return w.h }
func (w *nullWriter) WriteHeader(code int)        { w.status = code }
func (w *nullWriter) Write(p []byte) (int, error) { return len(p), nil }

// BenchmarkHandoutFresh is BenchmarkHandoutWired with a new Request each
// time, as net/http serves them (copying it costs one allocation), so that
// what routing leaves on the request is counted.
func BenchmarkHandoutFresh(b *testing.B) {
	s, _ := newHotServer(slog.New(slog.DiscardHandler))
	h := s.Handler()
	tmpl := httptest.NewRequest("GET", "/v1/tokens/svc", nil)
	tmpl.Header.Set("X-Tokenbroker", "1")
	w := &nullWriter{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		clear(w.h)
		r := new(http.Request)
		*r = *tmpl
		h.ServeHTTP(w, r)
		if w.status != 200 {
			b.Fatalf("status %d", w.status)
		}
	}
}

// guard keeps what the two wrappers it replaced did (recoverPanics inside
// logAccess): a panic before the answer began is a logged 500 with a 500
// access line; a panic after it aborts the connection with no access line;
// http.ErrAbortHandler passes through unlogged.
func TestGuardPanics(t *testing.T) {
	for _, tc := range []struct {
		name      string
		h         http.HandlerFunc
		wantPanic any
		status    int    // of the answer, when no panic escapes
		logged    bool   // "handler panicked"
		access    string // the access line's status, "" for none
	}{
		{"before the answer", func(http.ResponseWriter, *http.Request) { panic("boom") }, nil, 500, true, "500"},
		{"after the answer began", func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(200)
			panic("boom")
		}, http.ErrAbortHandler, 200, true, ""},
		{"after a write", func(w http.ResponseWriter, _ *http.Request) {
			_, _ = w.Write([]byte("{"))
			panic("boom")
		}, http.ErrAbortHandler, 200, true, ""},
		{"abort", func(http.ResponseWriter, *http.Request) { panic(http.ErrAbortHandler) }, http.ErrAbortHandler, 200, false, ""},
		{"no panic", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(204) }, nil, 204, false, "204"},
		{"nothing written", func(http.ResponseWriter, *http.Request) {}, nil, 200, false, "200"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs bytes.Buffer
			log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
			w := httptest.NewRecorder()
			var got any
			func() {
				defer func() { got = recover() }()
				guard(log, tc.h).ServeHTTP(w, httptest.NewRequest("GET", "/x", nil))
			}()
			if got != tc.wantPanic {
				t.Fatalf("panic %v; want %v", got, tc.wantPanic)
			}
			if w.Code != tc.status {
				t.Errorf("status %d; want %d", w.Code, tc.status)
			}
			if tc.status == 500 && !bytes.Contains(w.Body.Bytes(), []byte(`"internal_error"`)) {
				t.Errorf("500 body %s; want internal_error", w.Body)
			}
			if l := strings.Contains(logs.String(), "handler panicked"); l != tc.logged {
				t.Errorf("panic logged: %v; want %v: %s", l, tc.logged, logs.String())
			}
			access := ""
			if i := strings.Index(logs.String(), `"msg":"request"`); i >= 0 {
				_, rest, _ := strings.Cut(logs.String()[i:], `"status":`)
				access, _, _ = strings.Cut(rest, ",")
			}
			if access != tc.access {
				t.Errorf("access line status %q; want %q: %s", access, tc.access, logs.String())
			}
		})
	}
}
