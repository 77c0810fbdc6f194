package main

import (
	"context"
	"crypto/rand"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/internal/tbtest"

	"github.com/redis/go-redis/v9"

	"github.com/tokenbroker/tokenbroker/broker/redistest"
	"github.com/tokenbroker/tokenbroker/sources/oauthtest"
)

// partitionEnv sets how many cut/restore cycles the partition test runs.
// The default, 6, cuts each way once short and once long; RELIABILITY.md
// gives the long run's command.
const partitionEnv = "TOKENBROKER_PARTITION_CYCLES"

// partitionBroker is one daemon of the partitioned fleet, and what its
// clients saw.
type partitionBroker struct {
	name        string
	sock        string
	logs        *tbtest.SyncBuffer
	partitioned bool // the one in the namespace

	handouts, invalid, unavailable, other, gaps atomic.Int64
	slowest                                     atomic.Int64              // the longest answer, in nanoseconds
	window                                      atomic.Pointer[cutWindow] // the cut in force, on the cut broker

	mu       sync.Mutex
	expiry   map[string]time.Time // per credential, the latest expires_at handed out
	examples []string
	refusals []string // the first 503 answers
	slow     []string // the first answers that took over 2 s
	slowN    int      // all of them
}

func (b *partitionBroker) note(format string, args ...any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.examples) < 10 {
		b.examples = append(b.examples, fmt.Sprintf(format, args...))
	}
}

// cutWindow counts the cut broker's answers to requests sent during one
// cut, by credential.
type cutWindow struct {
	mu              sync.Mutex
	served, refused map[string]int
}

func (w *cutWindow) add(name string, served bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if served {
		w.served[name]++
	} else {
		w.refused[name]++
	}
}

// tally sums the answers in the window, to the credentials in spending and
// to the others.
func (w *cutWindow) tally(spending []string) (spendServed, spendRefused, otherServed, otherRefused int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	split := func(counts map[string]int) (spend, other int) {
		for name, n := range counts {
			if slices.Contains(spending, name) {
				spend += n
			} else {
				other += n
			}
		}
		return spend, other
	}
	spendServed, otherServed = split(w.served)
	spendRefused, otherRefused = split(w.refused)
	return spendServed, spendRefused, otherServed, otherRefused
}

// hammer fetches credential n's token from b until ctx ends, and classifies
// every answer. One client per credential, so that one waiting for a token
// being fetched holds up no other credential. A handout is invalid if the
// provider refuses its token or if it has no more than the handout floor
// left when the request was sent (expires_at has whole seconds, so this is
// checked to within a second). A refusal is a gap if an earlier handout's
// token still had more than the floor and a second left: the broker should
// have served it from memory.
func (b *partitionBroker) hammer(ctx context.Context, p *oauthtest.Provider, n string, floor time.Duration) {
	c := httpOver(b.sock)
	for ctx.Err() == nil {
		b.mu.Lock()
		known := b.expiry[n]
		b.mu.Unlock()
		w := b.window.Load()
		sent := time.Now()
		code, h, err := tryGet(c, n)
		if err != nil && ctx.Err() != nil {
			return
		}
		b.handouts.Add(1)
		took := time.Since(sent)
		for {
			if old := b.slowest.Load(); int64(took) <= old || b.slowest.CompareAndSwap(old, int64(took)) {
				break
			}
		}
		if took > 2*time.Second {
			b.mu.Lock()
			if b.slowN++; len(b.slow) < 12 {
				b.slow = append(b.slow, fmt.Sprintf("%s sent %s: %d after %s", n, sent.UTC().Format("15:04:05.000"), code, took.Round(time.Millisecond)))
			}
			b.mu.Unlock()
		}
		if err == nil && code == 200 {
			exp, perr := time.Parse(time.RFC3339, h.ExpiresAt)
			if !p.Valid(h.AccessToken) || perr != nil || h.ExpiresIn < int(floor/time.Second)-1 || !exp.Add(time.Second).After(sent.Add(floor)) {
				b.invalid.Add(1)
				b.note("%s: 200 with a token the provider refuses or below the floor (valid %v, expires_in %d, expires_at %s, sent %s)",
					n, p.Valid(h.AccessToken), h.ExpiresIn, h.ExpiresAt, sent.UTC().Format("15:04:05.000"))
				continue
			}
			b.mu.Lock()
			if exp.After(b.expiry[n]) {
				b.expiry[n] = exp
			}
			b.mu.Unlock()
			if w != nil {
				w.add(n, true)
			}
			continue
		}
		switch {
		case err == nil && code == 503:
			b.unavailable.Add(1)
			b.mu.Lock()
			if len(b.refusals) < 5 {
				b.refusals = append(b.refusals, fmt.Sprintf("%s sent %s, answered after %s: %s (the last token handed out expired at %s)",
					n, sent.UTC().Format("15:04:05.000"), took.Round(time.Millisecond), h.Description, known.UTC().Format("15:04:05")))
			}
			b.mu.Unlock()
		default:
			b.other.Add(1)
			b.note("%s: %d %s %s %v", n, code, h.Error, h.Description, err)
		}
		// The cut broker may swap the token it refreshed alone for the
		// fleet's after a restore: the check holds it to its tokens during
		// the cut.
		if left := known.Sub(sent); left > floor+time.Second && (w != nil || !b.partitioned) {
			b.gaps.Add(1)
			b.note("%s: %d at %s while a token handed out before had %s left", n, code, sent.UTC().Format("15:04:05.000"), left.Round(time.Millisecond))
		}
		if w != nil {
			w.add(n, false)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// startFleetDaemon runs serve, inside n unless n is nil, and waits until
// its socket answers. A socket is a file, so the host's clients reach a
// daemon in the namespace too. Logs are at info: the clients' requests
// would fill megabytes a minute at debug.
func startFleetDaemon(t *testing.T, n *netns, environ []string, sock string, logs *tbtest.SyncBuffer) *daemon {
	t.Helper()
	cmd := exec.Command(binary, "serve")
	if n != nil {
		cmd = n.command(context.Background(), binary, "serve")
	}
	return runDaemon(t, cmd, "info", environ, sock, logs)
}

// holdLocks takes every given refresh lock in Redis at once, as a broker
// would take one, and returns their release. While they are held no broker
// is between spending a refresh token and saving its successor. One script
// takes all or none, so the test holds a lock only while it cuts, and a
// broker that finds one taken waits no more than for a peer's refresh.
func holdLocks(t *testing.T, rc *redis.Client, keys []string) (release func()) {
	t.Helper()
	ctx := context.Background()
	owner := "partition-test-" + rand.Text()
	take := redis.NewScript(`for _, k in ipairs(KEYS) do if redis.call("exists", k) == 1 then return 0 end end
for _, k in ipairs(KEYS) do redis.call("set", k, ARGV[1], "PX", ARGV[2]) end
return 1`)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		taken, err := take.Run(ctx, rc, keys, owner, 2000).Int()
		if err != nil {
			t.Fatalf("taking the refresh locks: %v", err)
		}
		if taken == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the refresh locks were never all free at once for 10 s")
		}
	}
	return func() {
		for _, k := range keys {
			// Only our own: the lease may have ended and a broker taken it.
			_ = rc.Eval(ctx, `if redis.call("get", KEYS[1]) == ARGV[1] then return redis.call("del", KEYS[1]) end return 0`, []string{k}, owner).Err()
		}
	}
}

// generations sums the fleet's record generations in Redis, by credential.
func generations(t *testing.T, rc *redis.Client) map[string]uint64 {
	t.Helper()
	ctx := context.Background()
	keys, err := rc.Keys(ctx, "*:rec").Result()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]uint64{}
	for _, k := range keys {
		g, err := rc.HGet(ctx, k, "gen").Uint64()
		if err != nil {
			t.Fatalf("%s gen: %v", k, err)
		}
		out[keyCredential(k)] += g
	}
	return out
}

// keyCredential is the credential of a fleet key: PREFIX{NAME.F}:suffix.
func keyCredential(key string) string {
	_, rest, _ := strings.Cut(key, "{")
	name, _, _ := strings.Cut(rest, ".")
	return name
}

func envValue(environ []string, key string) string {
	for _, kv := range environ {
		if v, ok := strings.CutPrefix(kv, key+"="); ok {
			return v
		}
	}
	return ""
}

// A real partition. A fleet of three daemons shares Redis; one of them runs
// in its own network namespace, joined to the host by a veth pair, and
// reaches Redis and the provider on the pair's host end. Clients hammer
// every daemon while the test cuts that daemon's link to Redis and restores
// it, again and again: the link down (the provider cut too), Redis's
// address blackholed, Redis's address routed to a host that never answers;
// each for less than a token's life and for longer. No token may be handed
// out that the provider refuses or that is below the handout floor, no
// refresh token may be used twice, the cut daemon serves its tokens in
// memory while they last, and after each restore it converges to the
// fleet's tokens.
func TestPartitionedBroker(t *testing.T) {
	n := newNetns(t)
	cycles := 6
	if v, err := strconv.Atoi(os.Getenv(partitionEnv)); err == nil && v > 0 {
		cycles = v
	}
	const lifetime = 5 * time.Second
	floor := max(min(time.Minute, lifetime/10), time.Second) // the broker's handout floor (minTTL)
	srv := redistest.Start(t)
	rc := srv.Client()
	if err := rc.ConfigSet(context.Background(), "bind", "127.0.0.1 "+n.redisIP).Err(); err != nil {
		t.Fatalf("Redis listening on the pair's host end too: %v", err)
	}
	p, environ, sock1 := e2eSetup(t, oauthtest.Options{AccessLifetime: lifetime, Rotate: true, Addr: n.providerIP + ":0"})
	names := []string{"firework", "firework-user", "livepush", "ingest", "vsrs"}
	var spending []string // credentials whose refreshes spend a refresh token
	for _, name := range names {
		if g := envValue(environ, "TOKENBROKER_"+strings.ToUpper(strings.ReplaceAll(name, "-", "_"))+"_GRANT"); g != "client_credentials" {
			spending = append(spending, name)
		}
	}
	_, port, _ := strings.Cut(srv.Addr(), ":")
	fleet := append(slices.Clone(environ), "TOKENBROKER_ENCRYPTION_KEY=k1:"+strings.Repeat("3c", 32),
		"TOKENBROKER_REDIS_LOCK_TTL=2s",  // the lease, scaled to the tokens as the chaos run's
		"TOKENBROKER_REQUEST_TIMEOUT=2s", // a request into a cut link ends within a token's life
		"TOKENBROKER_HANDOUT_WAIT=1s")    // a caller waits a fifth of a token's life for one being fetched
	env1 := append(slices.Clone(fleet), "TOKENBROKER_REDIS_URL="+srv.URL())
	env2, sock2 := peerEnviron(t, env1)
	env3, sock3 := peerEnviron(t, append(slices.Clone(fleet), "TOKENBROKER_REDIS_URL=redis://"+n.redisIP+":"+port))

	brokers := []*partitionBroker{{name: "host-1", sock: sock1}, {name: "host-2", sock: sock2}, {name: "netns", sock: sock3, partitioned: true}}
	for _, b := range brokers {
		b.logs, b.expiry = &tbtest.SyncBuffer{}, map[string]time.Time{}
	}
	startFleetDaemon(t, nil, env1, sock1, brokers[0].logs)
	c1 := httpOver(sock1)
	for _, name := range names { // the fleet's first tokens, before the peers join
		if code, _, _ := get(t, c1, "/v1/tokens/"+name); code != 200 {
			t.Fatalf("first daemon, %s: status %d", name, code)
		}
	}
	startFleetDaemon(t, nil, env2, sock2, brokers[1].logs)
	startFleetDaemon(t, n, env3, sock3, brokers[2].logs)
	cut, c2, c3 := brokers[2], httpOver(sock2), httpOver(sock3)
	for _, name := range names {
		if code, h, err := tryGet(c3, name); err != nil || code != 200 || !p.Valid(h.AccessToken) {
			t.Fatalf("the daemon in the namespace, %s: status %d, %v; want a valid token", name, code, err)
		}
	}
	keys, err := rc.Keys(context.Background(), "*:rec").Result()
	if err != nil || len(keys) != len(names) {
		t.Fatalf("fleet records in Redis: %v, %v; want one per credential", keys, err)
	}
	var locks []string
	for _, k := range keys {
		if slices.Contains(spending, keyCredential(k)) {
			locks = append(locks, strings.TrimSuffix(k, ":rec")+":lock")
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, b := range brokers {
		for _, name := range names {
			wg.Go(func() { b.hammer(ctx, p, name, floor) })
		}
	}
	stopClients := sync.OnceFunc(func() { cancel(); wg.Wait() })
	t.Cleanup(stopClients)
	timeline := &tbtest.SyncBuffer{}
	defer func() { // what a failed run leaves to read
		if t.Failed() || os.Getenv(partitionEnv+"_LOGS") != "" {
			logs := map[string]*tbtest.SyncBuffer{}
			for _, b := range brokers {
				logs[b.name] = b.logs
			}
			keepRunLogs(t, "tb-partition-failed", "cuts", timeline, logs)
		}
	}()

	// converged waits until the cut broker hands out, for every credential,
	// a token one of the others hands out.
	converged := func(deadline time.Time) []string {
		pending := slices.Clone(names)
		for len(pending) > 0 && time.Now().Before(deadline) {
			pending = slices.DeleteFunc(pending, func(name string) bool {
				_, a, _ := tryGet(c1, name)
				code, x, err := tryGet(c3, name)
				_, b, _ := tryGet(c2, name)
				return err == nil && code == 200 && (x.AccessToken == a.AccessToken || x.AccessToken == b.AccessToken)
			})
			if len(pending) > 0 {
				time.Sleep(100 * time.Millisecond)
			}
		}
		return pending
	}

	began := time.Now()
	gens0, st0 := generations(t, rc), p.Stats()
	var longestConverge time.Duration
	for i := range cycles {
		kind := cutKind(i % cutKinds)
		length := 1500 * time.Millisecond // within the life of the tokens in hand
		if i%2 == 1 {
			length = lifetime + 3*time.Second // past it: they expire during the cut
		}
		time.Sleep(time.Duration(300+mrand.IntN(1200)) * time.Millisecond) // a random point of the refresh cycle
		gens, st := generations(t, rc), p.Stats()
		w := &cutWindow{served: map[string]int{}, refused: map[string]int{}}
		release := holdLocks(t, rc, locks)
		if err := n.cut(kind); err != nil {
			release()
			t.Fatal(err)
		}
		cutAt := time.Now()
		cut.window.Store(w)
		release()
		fmt.Fprintf(timeline, "%s cut %d: %s for %s\n", time.Now().UTC().Format("15:04:05.000"), i+1, kind, length)
		time.Sleep(length)
		cut.window.Store(nil)
		if err := n.restore(kind); err != nil {
			t.Fatal(err)
		}
		restored := time.Now()
		fmt.Fprintf(timeline, "%s restored %d\n", restored.UTC().Format("15:04:05.000"), i+1)
		pending := converged(restored.Add(2*lifetime + 5*time.Second))
		took := time.Since(restored)
		longestConverge = max(longestConverge, took)
		if len(pending) > 0 {
			t.Errorf("cycle %d (%s, %s): the cut daemon did not converge to the fleet's tokens within %s for %v", i+1, kind, length, took.Round(time.Millisecond), pending)
		}
		spendServed, spendRefused, otherServed, otherRefused := w.tally(spending)
		// A long cut must show that the tokens in hand ran out and that no
		// refresh token was spent without Redis. (TestNetnsCuts checks
		// what each cut reaches.)
		if length > lifetime && spendRefused == 0 {
			t.Errorf("cycle %d (%s, %s): the cut daemon served the refresh-token credentials throughout a cut longer than their tokens live: was it cut?", i+1, kind, length)
		}
		gensAfter, stAfter := generations(t, rc), p.Stats()
		var dg uint64
		for name, g := range gensAfter {
			dg += g - gens[name]
		}
		t.Logf("cycle %d, %s: %s for %s: during the cut the cut daemon served/refused %d/%d (refresh-token credentials), %d/%d (client credentials); converged %s after the restore; upstream %d token requests for %d new generations; reuse %d",
			i+1, cutAt.UTC().Format("15:04:05.000"), kind, length, spendServed, spendRefused, otherServed, otherRefused, took.Round(time.Millisecond),
			stAfter.TokenRequests-st.TokenRequests, dg, stAfter.ReuseEvents-st.ReuseEvents)
	}
	stopClients()

	gensEnd, stEnd := generations(t, rc), p.Stats()
	sum := func(creds []string, f func(string) uint64) (total uint64) {
		for _, name := range creds {
			total += f(name)
		}
		return total
	}
	others := slices.DeleteFunc(slices.Clone(names), func(name string) bool { return slices.Contains(spending, name) })
	callsOf := func(name string) uint64 {
		id := clientID(environ, name)
		return uint64(stEnd.ByClient[id] - st0.ByClient[id])
	}
	gensOf := func(name string) uint64 { return gensEnd[name] - gens0[name] }
	spendCalls, spendGens := sum(spending, callsOf), sum(spending, gensOf)
	otherCalls, otherGens := sum(others, callsOf), sum(others, gensOf)
	var handouts, invalid, unavailable, other, gaps int64
	var perBroker, examples []string
	for _, b := range brokers {
		handouts += b.handouts.Load()
		invalid += b.invalid.Load()
		unavailable += b.unavailable.Load()
		other += b.other.Load()
		gaps += b.gaps.Load()
		perBroker = append(perBroker, fmt.Sprintf("%s %d (503: %d, slowest answer %s)", b.name, b.handouts.Load(), b.unavailable.Load(), time.Duration(b.slowest.Load()).Round(time.Millisecond)))
		for _, e := range b.examples {
			examples = append(examples, b.name+": "+e)
		}
	}
	unlocked := strings.Count(cut.logs.String(), "refreshing without the fleet lock")
	for _, b := range brokers[:2] {
		if len(b.refusals) > 0 {
			t.Logf("%s, which was never cut, refused: %s", b.name, strings.Join(b.refusals, "; "))
		}
	}
	for _, b := range brokers {
		if len(b.slow) > 0 {
			t.Logf("%s: %d answers took over 2 s, the first: %s", b.name, b.slowN, strings.Join(b.slow, "; "))
		}
	}
	t.Logf("partition run: %d cycles in %s, 3 daemons (1 in a network namespace), %d credentials of %s (%d spending rotating refresh tokens with reuse detection)\n"+
		"  handouts %d (%s): invalid or below the floor %d, refused while a token in hand still served %d, other answers %d\n"+
		"  upstream: refresh-token credentials %d token requests for %d generations (%.3f per cycle); client credentials %d for %d (%.3f; the cut daemon refreshed them alone %d times)\n"+
		"  reuse events %d; longest convergence after a restore %s",
		cycles, time.Since(began).Round(time.Second), len(names), lifetime, len(spending),
		handouts, strings.Join(perBroker, ", "), invalid, gaps, other,
		spendCalls, spendGens, float64(spendCalls)/float64(spendGens), otherCalls, otherGens, float64(otherCalls)/float64(otherGens), unlocked,
		stEnd.ReuseEvents, longestConverge.Round(time.Millisecond))
	if invalid != 0 || gaps != 0 || other != 0 {
		t.Errorf("%d invalid handouts, %d refusals while a token in hand still served, %d other answers; want 0; for example:\n  %s",
			invalid, gaps, other, strings.Join(examples, "\n  "))
	}
	// One upstream refresh per generation, as in the fleet race: a spent
	// refresh token always becomes the fleet's next record.
	if spendGens == 0 || float64(spendCalls)/float64(spendGens) > 1.02 {
		t.Errorf("refresh-token credentials: %d upstream token requests for %d generations; want at most 1.02 per generation", spendCalls, spendGens)
	}
	// The cut broker logged every failed Redis command and provider
	// request: none may carry a secret.
	for _, b := range brokers {
		logs := b.logs.String()
		for _, kv := range fleet {
			k, v, _ := strings.Cut(kv, "=")
			secret := k == "TOKENBROKER_ENCRYPTION_KEY" || strings.HasSuffix(k, "_SECRET") || strings.HasSuffix(k, "_REFRESH_TOKEN") || strings.HasSuffix(k, "_PASSWORD")
			if secret && strings.Contains(logs, v) {
				t.Errorf("%s's log holds the value of %s", b.name, k)
			}
		}
	}
	if stEnd.ReuseEvents != 0 {
		chaos := make([]*chaosBroker, len(brokers))
		for i, b := range brokers {
			chaos[i] = &chaosBroker{name: b.name, logs: b.logs}
		}
		clientOf := map[string]string{}
		for _, name := range names {
			clientOf[name] = clientID(environ, name)
		}
		t.Errorf("reuse events = %d; want 0", stEnd.ReuseEvents)
		for _, r := range p.Reuses() {
			t.Error(reuseStory(r, clientOf, timeline.String(), chaos))
		}
	}
}
