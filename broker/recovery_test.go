package broker

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker/redistest"
	"github.com/tokenbroker/tokenbroker/broker/store"
	"github.com/tokenbroker/tokenbroker/broker/store/file"
	"github.com/tokenbroker/tokenbroker/broker/store/fleet"
	"github.com/tokenbroker/tokenbroker/sources"
	"github.com/tokenbroker/tokenbroker/sources/oauthtest"
)

// A real provider, down for longer than its tokens live, then back:
// during the outage a broker (or a fleet of three on one Redis) sends one
// probe per interval for all of its credentials, and the moment the
// provider answers again every credential refreshes, with no refresh token
// spent twice. The time from recovery to the first and the last fresh token
// is logged, not asserted. TOKENBROKER_OUTAGE (say 60s) lengthens the
// outage, for the figures.
func TestRecoveryFromAnOutage(t *testing.T) {
	const life, probe = 4 * time.Second, 5 * time.Second
	outage := 16 * time.Second
	if d, err := time.ParseDuration(os.Getenv("TOKENBROKER_OUTAGE")); err == nil && d > 2*life {
		outage = d
	}
	for _, tc := range []struct {
		name         string
		creds, fleet int
	}{
		{"1 credential", 1, 1},
		{"100 credentials", 100, 1},
		{"fleet of 3, 100 credentials", 100, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := oauthtest.StartTest(t, oauthtest.Options{AccessLifetime: life, Rotate: true})
			p.AddClient(oauthtest.Client{ID: "fw", RedirectURI: "http://127.0.0.1/cb", Dialect: oauthtest.Firework})
			hc := &http.Client{Timeout: 5 * time.Second}
			t.Cleanup(hc.CloseIdleConnections)
			creds := make([]Credential, tc.creds)
			for i := range creds {
				d, _ := sources.Preset("firework", sources.RefreshToken)
				d.TokenURL = p.TokenURL(oauthtest.Firework)
				e := &sources.Endpoint{Dialect: &d, HTTP: hc, Client: sources.Client{ID: "fw", RedirectURI: "http://127.0.0.1/cb"}}
				name := fmt.Sprintf("c%03d", i)
				creds[i] = Credential{Name: name, Provider: "firework", Endpoint: d.TokenURL, Source: &sources.RefreshTokenSource{Endpoint: e},
					Fingerprint: "fp-" + name, InitialRefreshToken: sources.NewSecret(p.IssueRefreshToken("fw"))}
			}
			var srv *redistest.Server
			if tc.fleet > 1 {
				srv = redistest.Start(t)
			}
			brokers := make([]*Broker, tc.fleet)
			for i := range brokers {
				var st store.Store = openStore(t, t.TempDir())
				if srv != nil {
					// The default lease: a probe lock that lapses under load
					// would let a second broker probe.
					st = fleet.New(st.(*file.Store), newRedisStore(t, srv, 15*time.Second), fleet.Options{Logger: quiet})
				}
				b, err := New(Options{Store: st, Logger: quiet, ProbeInterval: probe, PeerWait: 300 * time.Millisecond}, creds)
				if err != nil {
					t.Fatal(err)
				}
				if err := b.Start(context.Background()); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { b.Close(); st.Close() })
				brokers[i] = b
			}
			if _, _, ok := allFresh(brokers, creds, time.Now().Add(30*time.Second)); !ok {
				t.Fatal("not every credential had a token within 30 s of the start")
			}

			p.Inject(oauthtest.Fault{Status: http.StatusServiceUnavailable, Times: 1 << 30})
			down := time.Now()
			before := p.Stats().TokenRequests
			// Past two lifetimes every credential has come due and every
			// broker has seen the endpoint fail: from then on only probes.
			time.Sleep(2 * life)
			steadyFrom, steadyBefore := time.Now(), p.Stats().TokenRequests
			time.Sleep(outage - time.Since(down))
			steady, total := p.Stats().TokenRequests-steadyBefore, p.Stats().TokenRequests-before
			window := time.Since(steadyFrom)
			p.ClearFaults()
			up := time.Now()

			t.Logf("outage %v: %d requests to the provider (%.1f a minute); after the first %v: %d in %v (%.1f a minute)",
				outage.Round(time.Second), total, perMinute(total, time.Since(down)), 2*life,
				steady, window.Round(time.Second), perMinute(steady, window))
			if limit := int(window/probe) + 1; steady > limit {
				t.Errorf("%d requests in %v of outage for %d credentials on %d brokers; want at most %d (one probe per %v)",
					steady, window.Round(time.Millisecond), tc.creds, tc.fleet, limit, probe)
			}
			first, last, ok := allFresh(brokers, creds, up.Add(probe+30*time.Second))
			if !ok {
				t.Fatalf("not every credential on every broker had a fresh token within %v of the recovery", probe+30*time.Second)
			}
			t.Logf("recovery: first fresh token after %v, the last of %d (on %d brokers) after %v; %d requests",
				first.Sub(up).Round(time.Millisecond), tc.creds, tc.fleet, last.Sub(up).Round(time.Millisecond),
				p.Stats().TokenRequests-before-total)
			if r := p.Stats().ReuseEvents; r != 0 {
				t.Errorf("%d refresh tokens were spent twice; want 0", r)
			}
		})
	}
}

func perMinute(n int, d time.Duration) float64 { return float64(n) / d.Minutes() }

// allFresh polls until every broker hands out a token for every credential,
// and reports when the first and the last one did, or false at deadline.
func allFresh(fleet []*Broker, creds []Credential, deadline time.Time) (first, last time.Time, ok bool) {
	pending := map[[2]int]bool{}
	for i := range fleet {
		for j := range creds {
			pending[[2]int{i, j}] = true
		}
	}
	for len(pending) > 0 {
		now := time.Now()
		if now.After(deadline) {
			return first, last, false
		}
		for k := range pending {
			if _, ok := fleet[k[0]].creds[creds[k[1]].Name].handout(now); ok {
				delete(pending, k)
				if first.IsZero() {
					first = now
				}
				last = now
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	return first, last, true
}
