package broker

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker/redistest"
	redisstore "github.com/tokenbroker/tokenbroker/broker/store/redis"
	"github.com/tokenbroker/tokenbroker/sources"
	"github.com/tokenbroker/tokenbroker/sources/oauthtest"
)

func newRedisStore(t *testing.T, srv *redistest.Server, ttl time.Duration) *redisstore.Store {
	t.Helper()
	s, err := redisstore.New(redisstore.Options{Client: srv.Client(), LockTTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Eight brokers share one Redis and one rotating provider with reuse
// detection; clients hammer all of them. Every handout is valid, no refresh
// token is used twice, and one upstream refresh serves the whole fleet.
// TOKENBROKER_FLEET_SECONDS lengthens the run (default 12).
func TestFleetRace(t *testing.T) {
	seconds := 12
	if v, err := strconv.Atoi(os.Getenv("TOKENBROKER_FLEET_SECONDS")); err == nil && v > 0 {
		seconds = v
	}
	const brokers, creds = 8, 10
	srv := redistest.Start(t)
	p := oauthtest.StartTest(t, oauthtest.Options{AccessLifetime: 2 * time.Second, Rotate: true})
	hc := &http.Client{Timeout: 5 * time.Second}
	var names []string
	seeds := map[string]string{}
	for i := range creds {
		name := fmt.Sprintf("c%d", i)
		names = append(names, name)
		p.AddClient(oauthtest.Client{ID: name, Secret: "s", RedirectURI: "http://127.0.0.1/cb", Dialect: oauthtest.Firework})
		seeds[name] = p.IssueRefreshToken(name)
	}
	var fleet []*Broker
	for range brokers {
		var cs []Credential
		for _, name := range names {
			d, _ := sources.Preset("firework", sources.RefreshToken)
			d.TokenURL = p.TokenURL(oauthtest.Firework)
			e := &sources.Endpoint{Dialect: &d, HTTP: hc, Client: sources.Client{ID: name, Secret: sources.NewSecret("s"), RedirectURI: "http://127.0.0.1/cb"}}
			cs = append(cs, Credential{Name: name, Provider: "firework", Source: &sources.RefreshTokenSource{Endpoint: e},
				Fingerprint: "fp-" + name, InitialRefreshToken: sources.NewSecret(seeds[name])})
		}
		b, err := New(Options{Store: newRedisStore(t, srv, 2*time.Second), Logger: quiet, PeerWait: 500 * time.Millisecond}, cs)
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		fleet = append(fleet, b)
	}

	var handouts, invalid, failed atomic.Int64
	stop := time.Now().Add(time.Duration(seconds) * time.Second)
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			for n := i; time.Now().Before(stop); n++ {
				b, name := fleet[n%brokers], names[n%creds]
				h, err := b.Token(context.Background(), name)
				handouts.Add(1)
				switch {
				case err != nil:
					failed.Add(1)
					t.Logf("handout %s: %v", name, err)
				case !p.Valid(h.AccessToken.Reveal()):
					invalid.Add(1)
				}
			}
		})
	}
	wg.Wait()

	var cycles uint64
	for _, name := range names {
		rec, err := fleet[0].opts.Store.Load(context.Background(), fleet[0].creds[name].key)
		if err != nil {
			t.Fatal(err)
		}
		cycles += rec.Generation
	}
	st := p.Stats()
	ratio := float64(st.Refreshes) / float64(cycles)
	t.Logf("%d s, %d brokers, %d credentials: %d handouts (%d failed, %d invalid), %d upstream refreshes for %d generations (%.3f per cycle), %d reuse events",
		seconds, brokers, creds, handouts.Load(), failed.Load(), invalid.Load(), st.Refreshes, cycles, ratio, st.ReuseEvents)
	if st.ReuseEvents != 0 {
		t.Errorf("reuse events = %d; want 0", st.ReuseEvents)
	}
	if failed.Load() != 0 || invalid.Load() != 0 {
		t.Errorf("%d failed and %d invalid handouts of %d; want 0", failed.Load(), invalid.Load(), handouts.Load())
	}
	if ratio > 1.02 {
		t.Errorf("upstream refreshes per cycle = %.3f; want <= 1.02", ratio)
	}
	if min := uint64(creds * seconds / 2); cycles < min {
		t.Errorf("only %d refresh cycles in %d s of 2 s tokens; want >= %d", cycles, seconds, min)
	}
}
