package broker

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/tokenbroker/tokenbroker/broker/redistest"
	redisstore "github.com/tokenbroker/tokenbroker/broker/store/redis"
	"github.com/tokenbroker/tokenbroker/sources"
	"github.com/tokenbroker/tokenbroker/sources/oauthtest"
)

// Fleet efficiency: upstream token requests per token lifetime for fleets
// of 1, 4 and 8 brokers sharing one Redis, against the same number of
// services that each keep their own token with golang.org/x/oauth2
// (clientcredentials.Config.TokenSource, a ReuseTokenSource), for the same
// time against the same kind of local provider.
//
// Each side has its own provider, with effCreds client_credentials clients.
// Every broker and every service is asked for every credential's token
// every 10 ms. A window of some lifetimes is measured once every broker and
// every service holds its tokens.
//
// x/oauth2 refreshes a token once it expires within an early-expiry delta,
// by default 10 s, which is more than a short test token's whole life (it
// would fetch on every call); the services here use the delta in the same
// proportion to the lifetime as 10 s is to one hour (lifetime/360), set with
// oauth2.ReuseTokenSourceWithExpiry on the Config's TokenSource.
//
// The brokers refresh at 75-85% of a lifetime (so ~1.25 requests per
// lifetime per credential, for the whole fleet), but never hand out a token
// with less than max(min(60 s, 10%), 1 s) left: with 2 s tokens that floor
// is half the lifetime, and callers asking all the time make the fleet
// refresh at ~50% instead (~2 requests per lifetime). From 10 s tokens on
// the floor is the 10% margin and the schedule rules. The N services fetch
// about once per lifetime each. It asserts that the fleet sends one
// upstream request per refresh cycle (generation), whatever its size.
//
// The normal suite measures 3 lifetimes of 2 s tokens; TOKENBROKER_SCALE=1
// measures 10 lifetimes of 10 s tokens (100 s);
// TOKENBROKER_FLEET_LIFETIME=2s (at least 2s) sets the lifetime.
func TestFleetEfficiency(t *testing.T) {
	const (
		effCreds = 4
		poll     = 10 * time.Millisecond
	)
	lifetime, lifetimes := 2*time.Second, 3
	if os.Getenv("TOKENBROKER_SCALE") == "1" {
		lifetime, lifetimes = 10*time.Second, 10
	}
	if d, err := time.ParseDuration(os.Getenv("TOKENBROKER_FLEET_LIFETIME")); err == nil && d >= 2*time.Second {
		lifetime = d
	}
	window := time.Duration(lifetimes) * lifetime
	srv := redistest.Start(t)
	sizes := []int{1, 4, 8}
	type result struct {
		size                    int
		brokerWindow, gensStart uint64
		brokerTotal, gensTotal  uint64
		oauthWindow             int
		failed                  int64
		obs                     *fleetObserver
	}
	results := make([]result, len(sizes))
	var wg sync.WaitGroup
	for si, size := range sizes {
		wg.Go(func() {
			res := &results[si]
			res.size = size
			res.obs = &fleetObserver{results: map[Result]int{}, last: map[string]time.Time{}}
			pb := oauthtest.StartTest(t, oauthtest.Options{AccessLifetime: lifetime}) // the fleet's
			po := oauthtest.StartTest(t, oauthtest.Options{AccessLifetime: lifetime}) // the services'
			scopes := []string{"videos:write"}
			var names []string
			for i := range effCreds {
				name := fmt.Sprintf("c%d", i)
				names = append(names, name)
				pb.AddClient(oauthtest.Client{ID: name, Secret: "s-" + name, Scopes: scopes, Dialect: oauthtest.Firework})
				po.AddClient(oauthtest.Client{ID: name, Secret: "s-" + name, Scopes: scopes, Dialect: oauthtest.Firework})
			}
			hc := &http.Client{Timeout: 5 * time.Second}
			// Last, once the brokers are closed: a connection the provider
			// has accepted but not yet read from would hold its Close for 5 s.
			defer hc.CloseIdleConnections()

			var fleet []*Broker
			for range size {
				var cs []Credential
				for _, name := range names {
					d, _ := sources.Preset("firework", sources.ClientCredentials)
					d.TokenURL = pb.TokenURL(oauthtest.Firework)
					e := &sources.Endpoint{Dialect: &d, HTTP: hc, Client: sources.Client{ID: name, Secret: sources.NewSecret("s-" + name), Scopes: scopes}}
					cs = append(cs, Credential{Name: name, Provider: "firework", Source: &sources.ClientCredentialsSource{Endpoint: e}, Fingerprint: "fp-" + name})
				}
				st, err := redisstore.New(redisstore.Options{Client: srv.Client(), LockTTL: 2 * time.Second, Prefix: fmt.Sprintf("eff%d:", size)})
				if err != nil {
					t.Error(err)
					return
				}
				b, err := New(Options{Store: st, Logger: quiet, PeerWait: 500 * time.Millisecond, Observer: res.obs}, cs)
				if err != nil {
					t.Error(err)
					return
				}
				if err := b.Start(context.Background()); err != nil {
					t.Error(err)
					return
				}
				defer b.Close()
				fleet = append(fleet, b)
			}
			var services [][]oauth2.TokenSource
			for range size {
				var tss []oauth2.TokenSource
				for _, name := range names {
					cfg := &clientcredentials.Config{ClientID: name, ClientSecret: "s-" + name, TokenURL: po.TokenURL(oauthtest.Firework),
						Scopes: scopes, AuthStyle: oauth2.AuthStyleInParams}
					ctx := context.WithValue(context.Background(), oauth2.HTTPClient, hc)
					tss = append(tss, oauth2.ReuseTokenSourceWithExpiry(nil, cfg.TokenSource(ctx), lifetime/360))
				}
				services = append(services, tss)
			}

			// Clients: one per broker and one per service, asking for every
			// credential every poll.
			stop := make(chan struct{})
			var clients sync.WaitGroup
			var failed atomic.Int64
			var warm sync.WaitGroup
			// client asks for every token every poll through fetch(i); its
			// first full round warms it, and later failures are counted.
			client := func(n int, fetch func(i int) error) {
				warm.Add(1)
				clients.Go(func() {
					first := true
					for {
						ok := true
						for i := range n {
							if err := fetch(i); err != nil {
								ok = false
								if !first {
									failed.Add(1)
								}
							}
						}
						if first && ok {
							first = false
							warm.Done()
						}
						select {
						case <-stop:
							if first {
								warm.Done()
							}
							return
						case <-time.After(poll):
						}
					}
				})
			}
			for _, b := range fleet {
				client(len(names), func(i int) error { _, err := b.Token(context.Background(), names[i]); return err })
			}
			for _, tss := range services {
				client(len(tss), func(i int) error { _, err := tss[i].Token(); return err })
			}
			warm.Wait()
			gens := func() (n uint64) {
				for _, name := range names {
					if rec, err := fleet[0].opts.Store.Load(context.Background(), fleet[0].creds[name].key); err == nil {
						n += rec.Generation
					}
				}
				return n
			}
			// The provider counts a call when it arrives, and its
			// generation is stored a moment later: read both while no
			// broker is refreshing, or a call in flight counts as waste.
			quiet := func() (calls int, g uint64) {
				for {
					if !slices.ContainsFunc(fleet, (*Broker).refreshing) {
						calls, g = pb.Stats().TokenRequests, gens()
						if !slices.ContainsFunc(fleet, (*Broker).refreshing) && pb.Stats().TokenRequests == calls {
							return calls, g
						}
					}
					time.Sleep(time.Millisecond)
				}
			}
			b0, g0 := quiet()
			o0 := po.Stats().TokenRequests
			res.obs.measure(lifetime)
			time.Sleep(window)
			b1, g1 := quiet()
			o1 := po.Stats().TokenRequests
			close(stop)
			clients.Wait()
			res.brokerWindow, res.oauthWindow, res.gensStart = uint64(b1-b0), o1-o0, g1-g0
			res.brokerTotal, res.gensTotal = uint64(b1), g1
			res.failed = failed.Load()
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	var tab strings.Builder
	fmt.Fprintf(&tab, "fleet efficiency: %d credentials of %v tokens, a window of %d lifetimes (%v)\n", effCreds, lifetime, lifetimes, window)
	fmt.Fprintf(&tab, "| fleet size | broker fleet: upstream calls per lifetime | broker fleet: calls per refresh cycle (since start) | x/oauth2, N services: calls per lifetime | fleet refresh results in the window | refreshes under 50%% of a lifetime after the previous one |\n|---:|---:|---:|---:|---|---:|\n")
	perLifetime := func(calls uint64) float64 { return float64(calls) / float64(effCreds*lifetimes) }
	for _, r := range results {
		results, early := r.obs.summary()
		fmt.Fprintf(&tab, "| %d | %.2f (%d calls) | %.3f (%d calls, %d generations) | %.2f (%d calls) | %s | %d |\n", r.size,
			perLifetime(r.brokerWindow), r.brokerWindow, float64(r.brokerTotal)/float64(r.gensTotal), r.brokerTotal, r.gensTotal,
			perLifetime(uint64(r.oauthWindow)), r.oauthWindow, results, early)
		if ratio := float64(r.brokerTotal) / float64(r.gensTotal); ratio > 1.02 {
			t.Errorf("fleet of %d: %.3f upstream calls per refresh cycle; want <= 1.02", r.size, ratio)
		}
		if r.failed != 0 {
			t.Errorf("fleet of %d: %d failed token calls after warm-up", r.size, r.failed)
		}
	}
	t.Log(tab.String())
}

// fleetObserver counts a fleet's refresh results, and the provider calls
// (ResultOK) that came less than half a lifetime after the credential's
// previous one, once measure is called.
type fleetObserver struct {
	mu       sync.Mutex
	on       bool
	lifetime time.Duration
	results  map[Result]int
	last     map[string]time.Time // the credential's last ResultOK
	early    int
}

func (o *fleetObserver) measure(lifetime time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.on, o.lifetime = true, lifetime
}

func (o *fleetObserver) Refreshed(credential, _ string, r Result, _ time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	now := time.Now()
	if r == ResultOK {
		if prev, ok := o.last[credential]; ok && o.on && now.Sub(prev) < o.lifetime/2 {
			o.early++
		}
		o.last[credential] = now
	}
	if o.on {
		o.results[r]++
	}
}

func (o *fleetObserver) LockWaited(string, time.Duration, string) {}
func (o *fleetObserver) RequestSlow(string)                       {}
func (o *fleetObserver) AnswerLost(string)                        {}
func (o *fleetObserver) Endpoint(string, EndpointEvent)           {}

func (o *fleetObserver) summary() (string, int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	var parts []string
	for _, r := range []Result{ResultOK, ResultAdopted, ResultPeer, ResultTransient} {
		parts = append(parts, fmt.Sprintf("%s %d", r, o.results[r]))
	}
	return strings.Join(parts, ", "), o.early
}
