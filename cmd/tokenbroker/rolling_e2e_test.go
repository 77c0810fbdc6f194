package main

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/api/client"
	"github.com/tokenbroker/tokenbroker/broker/redistest"
	"github.com/tokenbroker/tokenbroker/internal/tbtest"
	"github.com/tokenbroker/tokenbroker/sources/oauthtest"
)

// A fleet of three daemons rolls to a new client secret one broker at a
// time (SIGTERM, restart with CLIENT_SECRET=new and
// CLIENT_SECRET_PREVIOUS=old) while clients using the client library
// hammer every broker: no handout fails, and once the provider drops the
// old secret, every broker still refreshes.
func TestRollingRestartWithNewSecret(t *testing.T) {
	const oldSecret, newSecret = "fw-OLD-secret-1357", "fw-NEW-secret-2468"
	srv := redistest.Start(t)
	p := oauthtest.StartTest(t, oauthtest.Options{AccessLifetime: 4 * time.Second, Rotate: true})
	register := func(secret string, others ...string) {
		p.AddClient(oauthtest.Client{ID: "fw-app", Secret: secret, OtherSecrets: others, Scopes: []string{"videos:read"}, Dialect: oauthtest.Firework})
		p.AddClient(oauthtest.Client{ID: "lp", Secret: secret, OtherSecrets: others, Scopes: []string{"streams.read"}, Dialect: oauthtest.Livepush})
	}
	register(oldSecret)
	rt := p.IssueRefreshToken("lp")

	type member struct {
		tbtest.Home
		d *daemon
	}
	env := func(m *member, secrets ...string) []string {
		e := m.Environ(
			"TOKENBROKER_REDIS_URL="+srv.URL(),
			"TOKENBROKER_ENCRYPTION_KEY=k1:"+strings.Repeat("4d", 32),
			"TOKENBROKER_CREDENTIALS=fw,lp",
			"TOKENBROKER_FW_PROVIDER=firework",
			"TOKENBROKER_FW_TOKEN_URL="+p.TokenURL(oauthtest.Firework),
			"TOKENBROKER_FW_CLIENT_ID=fw-app",
			"TOKENBROKER_FW_SCOPES=videos:read",
			"TOKENBROKER_LP_PROVIDER=livepush",
			"TOKENBROKER_LP_TOKEN_URL="+p.TokenURL(oauthtest.Livepush),
			"TOKENBROKER_LP_CLIENT_ID=lp",
			"TOKENBROKER_LP_REFRESH_TOKEN="+rt,
		)
		for _, cred := range []string{"FW", "LP"} {
			e = append(e, "TOKENBROKER_"+cred+"_CLIENT_SECRET="+secrets[0])
			if len(secrets) > 1 {
				e = append(e, "TOKENBROKER_"+cred+"_CLIENT_SECRET_PREVIOUS="+secrets[1])
			}
		}
		return e
	}
	logs := &tbtest.SyncBuffer{}
	var fleet []*member
	for range 3 {
		m := &member{Home: tbtest.NewHome(t)}
		m.d = startDaemon(t, env(m, oldSecret), m.Socket, logs)
		fleet = append(fleet, m)
	}

	// Clients: a fresh TokenSource per call, so every call asks the broker
	// (riding out its restart with the library's retries).
	var handouts, failed atomic.Int64
	var failures sync.Map
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, m := range fleet {
		c := client.New(m.Socket)
		for _, name := range []string{"fw", "lp"} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for ctx.Err() == nil {
					tok, err := c.TokenSource(name, &client.TokenSourceOptions{RetryFor: 10 * time.Second}).TokenContext(ctx)
					if ctx.Err() != nil {
						return
					}
					handouts.Add(1)
					if err != nil || !p.Valid(tok.AccessToken) {
						failed.Add(1)
						if err == nil {
							err = errors.New("the provider says the token is not valid")
						}
						failures.Store(err.Error(), true)
					}
					time.Sleep(5 * time.Millisecond)
				}
			}()
		}
	}

	time.Sleep(2 * time.Second)
	register(newSecret, oldSecret) // the provider accepts both during the roll
	for _, m := range fleet {
		if err := m.d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if err := <-m.d.done; err != nil {
			t.Errorf("SIGTERM: %v, want exit 0", err)
		}
		m.d.done <- nil
		m.d = startDaemon(t, env(m, newSecret, oldSecret), m.Socket, logs)
		time.Sleep(1500 * time.Millisecond)
	}
	register(newSecret) // the provider drops the old secret
	time.Sleep(5 * time.Second)
	for i, m := range fleet {
		for _, name := range []string{"fw", "lp"} {
			if err := refreshOver(httpOver(m.Socket), name); err != nil {
				t.Errorf("broker %d: refresh %s with the new secret: %v", i, name, err)
			}
		}
	}
	cancel()
	wg.Wait()

	st := p.Stats()
	t.Logf("rolling restart of 3 brokers to a new secret: %d handouts, %d failed; provider: %d token requests, %d reuse events",
		handouts.Load(), failed.Load(), st.TokenRequests, st.ReuseEvents)
	if failed.Load() != 0 {
		var errs []string
		failures.Range(func(k, _ any) bool { errs = append(errs, k.(string)); return len(errs) < 5 })
		t.Errorf("%d of %d handouts failed: %v", failed.Load(), handouts.Load(), errs)
	}
	if handouts.Load() < 100 {
		t.Errorf("only %d handouts: the clients did not hammer", handouts.Load())
	}
	if st.ReuseEvents != 0 {
		t.Errorf("%d reuse events, want 0", st.ReuseEvents)
	}
	for _, s := range []string{oldSecret, newSecret} {
		if strings.Contains(logs.String(), s) {
			t.Error("a client secret appears in the daemons' logs")
		}
	}
}
