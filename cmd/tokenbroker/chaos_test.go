package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker/redistest"
	"github.com/tokenbroker/tokenbroker/internal/tbtest"
	"github.com/tokenbroker/tokenbroker/sources/oauthtest"
)

// chaosEnv sets how long the chaos run lasts, in seconds. .ci/test runs a
// short one; docs/RELIABILITY.md gives the 10-minute command.
const chaosEnv = "TOKENBROKER_CHAOS_SECONDS"

// chaosBroker is one daemon of the chaos fleet, restarted again and again.
type chaosBroker struct {
	name string
	env  []string
	sock string
	logs *tbtest.SyncBuffer

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

func (b *chaosBroker) start(t *testing.T) {
	cmd := exec.Command(binary, "serve")
	cmd.Env = append(slices.Clone(b.env), "TOKENBROKER_LOG_FORMAT=json")
	cmd.Stdout, cmd.Stderr = b.logs, b.logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	b.mu.Lock()
	b.cmd, b.done = cmd, done
	b.mu.Unlock()
}

// stop signals the daemon and waits for it; it returns the exit code.
func (b *chaosBroker) stop(sig syscall.Signal) int {
	b.mu.Lock()
	cmd, done := b.cmd, b.done
	b.mu.Unlock()
	_ = cmd.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
	return cmd.ProcessState.ExitCode()
}

// chaosStats are the run's figures.
type chaosStats struct {
	attempted, valid, invalid, brokerDown, unavailable, other atomic.Int64

	mu           sync.Mutex
	lastValid    map[string]time.Time
	examples     []string
	invalidBy    map[string]int64       // by credential
	firstInvalid map[string]time.Time   // by credential
	invalidAt    map[string][]time.Time // by credential
}

func (s *chaosStats) note(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.examples) < 10 {
		s.examples = append(s.examples, fmt.Sprintf(format, args...))
	}
}

// The chaos run: a fleet of three daemons sharing Redis, with clients
// hammering every one, while brokers are killed (SIGKILL) and stopped
// (SIGTERM) and restarted, Redis is restarted empty, flushed and paused, and
// the provider fails (503, 429 with Retry-After, slow answers, hang-ups,
// refreshes acted on past the request timeout, answers lost after rotating).
// No handed-out token may be expired or invalid, no refresh token may be
// used twice or lost, and the longest time any credential went without a
// valid handout while the provider was up is reported.
func TestChaos(t *testing.T) {
	secs, _ := strconv.Atoi(os.Getenv(chaosEnv))
	if secs <= 0 {
		t.Skipf("set %s=60 (or 600) to run the chaos run; .ci/test does", chaosEnv)
	}
	duration := time.Duration(secs) * time.Second
	const lifetime = 6 * time.Second
	p, environ, _ := e2eSetup(t, oauthtest.Options{AccessLifetime: lifetime, Rotate: true})
	srv := redistest.Start(t)
	names := []string{"firework", "firework-user", "livepush", "ingest", "vsrs"}

	var brokers []*chaosBroker
	for i := range 3 {
		h := tbtest.NewHome(t)
		b := &chaosBroker{name: string(rune('a' + i)), sock: h.Socket, logs: &tbtest.SyncBuffer{}, env: h.Rehome(environ)}
		// A request timeout shorter than the slow faults' delay, and than
		// the stop's 2 s grace.
		b.env = append(b.env, "TOKENBROKER_REDIS_URL="+srv.URL(), "TOKENBROKER_REDIS_LOCK_TTL=2s", "TOKENBROKER_REQUEST_TIMEOUT=1s",
			"TOKENBROKER_ENCRYPTION_KEY=k1:"+strings.Repeat("7e", 32))
		b.start(t)
		brokers = append(brokers, b)
	}
	t.Cleanup(func() {
		for _, b := range brokers {
			b.stop(syscall.SIGKILL)
		}
	})

	st := &chaosStats{lastValid: map[string]time.Time{}, invalidBy: map[string]int64{}, firstInvalid: map[string]time.Time{}, invalidAt: map[string][]time.Time{}}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, b := range brokers {
		for range 3 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				hammer(ctx, b.sock, names, p, st)
			}()
		}
	}

	// Provider health, for the gap figure: gaps count only while it is up.
	var provMu sync.Mutex
	provUpSince := time.Now()
	provUp := true
	setProvider := func(up bool) {
		provMu.Lock()
		defer provMu.Unlock()
		if up && !provUp {
			provUpSince = time.Now()
		}
		provUp = up
	}
	warm := time.Now().Add(5 * time.Second) // the fleet's first tokens
	gapBy := map[string]time.Duration{}     // the longest per credential
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-tick.C:
				provMu.Lock()
				up, since := provUp, provUpSince
				provMu.Unlock()
				if !up || now.Before(warm) {
					continue
				}
				st.mu.Lock()
				for _, n := range names {
					from := maxTime(st.lastValid[n], since, warm)
					gapBy[n] = max(gapBy[n], now.Sub(from))
				}
				st.mu.Unlock()
			}
		}
	}()

	// The chaos itself, from this goroutine.
	counts := map[string]int{}
	var kills []time.Time
	// Windows in which the provider acted on refreshes whatever their
	// client did.
	type window struct{ from, to time.Time }
	var slowWindows []window
	lostAnswers := 0                          // answers the provider dropped after rotating
	const slowDelay = 1500 * time.Millisecond // past the 1 s request timeout, within the stop's 2 s grace
	timeline := &tbtest.SyncBuffer{}
	defer func() { // what a failed run leaves to read
		if t.Failed() {
			logs := map[string]*tbtest.SyncBuffer{}
			for _, b := range brokers {
				logs[b.name] = b.logs
			}
			keepRunLogs(t, "tb-chaos-failed", "faults", timeline, logs)
		}
	}()
	end := time.Now().Add(duration)
	for time.Now().Before(end) {
		time.Sleep(time.Duration(1500+rand.IntN(1500)) * time.Millisecond)
		b := brokers[rand.IntN(len(brokers))]
		action := rand.IntN(10)
		fmt.Fprintf(timeline, "%s action %d (broker %s)\n", time.Now().UTC().Format("15:04:05.000"), action, b.name)
		switch action {
		case 0, 1: // kill -9, restart shortly
			counts["broker SIGKILL + restart"]++
			kills = append(kills, time.Now())
			b.stop(syscall.SIGKILL)
			time.Sleep(time.Duration(200+rand.IntN(1000)) * time.Millisecond)
			b.start(t)
		case 2: // graceful stop, restart
			counts["broker SIGTERM + restart"]++
			if code := b.stop(syscall.SIGTERM); code != 0 {
				t.Errorf("broker %s exited %d on SIGTERM, want 0", b.name, code)
			}
			b.start(t)
		case 3: // Redis restarted empty
			counts["Redis restart (empty)"]++
			srv.Kill()
			time.Sleep(time.Duration(300+rand.IntN(1500)) * time.Millisecond)
			srv.Restart()
		case 4:
			counts["Redis FLUSHALL"]++
			srv.Flush()
		case 5: // Redis paused: connections open, nothing answers
			counts["Redis paused (SIGSTOP)"]++
			srv.Pause()
			time.Sleep(time.Duration(500+rand.IntN(2500)) * time.Millisecond)
			srv.Resume()
		case 6: // provider down: 503, then 429 with Retry-After
			counts["provider 503/429 outage"]++
			setProvider(false)
			p.Inject(oauthtest.Fault{Status: 503, Times: 1 << 30})
			time.Sleep(time.Duration(1000+rand.IntN(3000)) * time.Millisecond)
			p.ClearFaults()
			p.Inject(oauthtest.Fault{Status: 429, RetryAfter: "1", Times: 3})
			time.Sleep(time.Second)
			p.ClearFaults()
			setProvider(true)
		case 7: // provider slow and hanging up (before acting)
			counts["provider slow answers and hang-ups"]++
			setProvider(false)
			p.Inject(oauthtest.Fault{Delay: 2 * time.Second, Times: 5})
			p.Inject(oauthtest.Fault{Hangup: true, Times: 5})
			p.Inject(oauthtest.Fault{OAuthError: "temporarily_unavailable", Times: 5})
			time.Sleep(3 * time.Second)
			p.ClearFaults()
			setProvider(true)
		case 8: // provider slow past the request timeout: it acts whatever the client does
			counts["provider slow past the timeout"]++
			setProvider(false)
			from := time.Now()
			p.Inject(oauthtest.Fault{Delay: slowDelay, Detached: true, Times: 3})
			time.Sleep(3 * time.Second)
			p.ClearFaults()
			slowWindows = append(slowWindows, window{from, time.Now().Add(slowDelay)})
			setProvider(true)
		case 9: // the password credential's answer lost after its refresh token rotated
			counts["answer lost after rotation"]++
			setProvider(false)
			faults := p.Stats().Faults
			p.Inject(oauthtest.Fault{ClientID: clientID(environ, "vsrs"), AfterProcessing: true, Hangup: true})
			for end := time.Now().Add(lifetime); p.Stats().Faults == faults && time.Now().Before(end); {
				time.Sleep(50 * time.Millisecond) // until its next refresh meets the fault
			}
			if p.Stats().Faults > faults {
				lostAnswers++
			}
			time.Sleep(time.Second)
			p.ClearFaults()
			setProvider(true)
		}
	}

	// Settle: every broker up, then every credential must be served valid
	// by every broker again (a lost refresh token would leave its
	// credential needing re-authorization).
	settled := time.Now()
	lost := map[string]bool{}
	for _, b := range brokers {
		c := httpOver(b.sock)
		for _, n := range names {
			ok := false
			for deadline := time.Now().Add(2 * lifetime); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
				if code, h, err := tryGet(c, n); err == nil && code == 200 && p.Valid(h.AccessToken) {
					ok = true
					break
				}
			}
			if !ok {
				lost[n] = true
			}
		}
	}
	cancel()
	wg.Wait()

	ps := p.Stats()
	// A broker killed between the provider's answer and its save loses the
	// rotated refresh token with it: no client of a provider without a
	// reuse grace period can prevent that (RELIABILITY.md, "SIGKILL after
	// the provider answered"). The provider shows it: the reused token was
	// spent just before a SIGKILL, and its successor was never offered
	// back. Two live brokers spending one token offer both successors.
	// A broker killed while a slow provider still worked on its sent
	// refresh loses the answer the same way: the provider rotates after the
	// kill.
	clientOf := map[string]string{}
	for _, n := range names {
		clientOf[n] = clientID(environ, n)
	}
	in := func(ws []window, at time.Time) bool {
		return slices.ContainsFunc(ws, func(w window) bool { return !at.Before(w.from) && !at.After(w.to) })
	}
	crashLost := map[string]time.Time{} // client ID -> when the reuse revoked its grant
	// The password credential recovers from that loss with its password,
	// so it may lose more than one grant; its revoked tokens are excused
	// for one lifetime after each loss. An answer the provider dropped
	// after rotating costs it no reuse: it starts a new grant instead.
	var recovered []oauthtest.Reuse
	unexplained, crashes := 0, 0
	var stories []string
	for _, r := range p.Reuses() {
		killed := slices.ContainsFunc(kills, func(k time.Time) bool {
			return (!k.Before(r.SpentAt) && k.Sub(r.SpentAt) < 3*time.Second) ||
				(in(slowWindows, k) && k.Before(r.SpentAt) && r.SpentAt.Sub(k) <= slowDelay)
		})
		_, seen := crashLost[r.ClientID]
		recovers := r.ClientID == clientOf["vsrs"]
		switch {
		case killed && !r.SuccessorPresented && recovers:
			crashes++
			recovered = append(recovered, r)
		case killed && !r.SuccessorPresented && !seen:
			crashes++
			crashLost[r.ClientID] = r.At
		default:
			unexplained++
			stories = append(stories, reuseStory(r, clientOf, timeline.String(), brokers))
		}
	}
	// The revoked grant's tokens, handed out until the brokers learn of it,
	// and the credential itself, are that loss too.
	excused := int64(0)
	for n := range lost {
		if _, ok := crashLost[clientOf[n]]; ok {
			delete(lost, n)
		}
	}
	st.mu.Lock()
	for n, c := range st.invalidBy {
		if at, ok := crashLost[clientOf[n]]; ok && !st.firstInvalid[n].Before(at) {
			excused += c
			continue
		}
		// The revoked grant's token, handed out until the brokers refresh.
		for _, at := range st.invalidAt[n] {
			if slices.ContainsFunc(recovered, func(r oauthtest.Reuse) bool {
				return r.ClientID == clientOf[n] && !at.Before(r.At) && at.Sub(r.At) <= lifetime
			}) {
				excused++
			}
		}
	}
	// A credential lost that way stays without a token to the end.
	var longest time.Duration
	longestName := ""
	for n, gap := range gapBy {
		if _, ok := crashLost[clientOf[n]]; !ok && gap > longest {
			longest, longestName = gap, n
		}
	}
	st.mu.Unlock()
	var actions []string
	for k, v := range counts {
		actions = append(actions, fmt.Sprintf("%s: %d", k, v))
	}
	slices.Sort(actions)
	awaited := 0
	for _, b := range brokers {
		awaited += strings.Count(b.logs.String(), "awaiting its answer, not sending it again")
	}
	t.Logf("chaos run: %s, 3 brokers, %d credentials (%s tokens, 3 rotating with reuse detection)\n  faults: %s\n"+
		"  handouts attempted %d: valid %d, expired or invalid %d (%d of them the revoked grant of a token lost that way); no answer (broker down) %d; 503 no token %d; other %d\n"+
		"  provider: %d token requests, %d refreshes, %d reuse events (%d of them a token lost with a broker killed between the answer and the save); other refresh tokens lost: %d\n"+
		"  slow refreshes awaited past the request timeout: %d; answers the provider dropped after rotating the password credential's refresh token: %d (a new grant each, no reuse)\n"+
		"  longest gap without a valid handout while the provider was up: %s (%s); settled in %s",
		duration, len(names), lifetime, strings.Join(actions, ", "),
		st.attempted.Load(), st.valid.Load(), st.invalid.Load(), excused, st.brokerDown.Load(), st.unavailable.Load(), st.other.Load(),
		ps.TokenRequests, ps.Refreshes, ps.ReuseEvents, crashes, len(lost), awaited, lostAnswers, longest.Round(time.Millisecond), longestName,
		time.Since(settled).Round(time.Millisecond))
	if st.invalid.Load() != excused || st.other.Load() != 0 {
		t.Errorf("%d expired or invalid handouts, %d unexpected answers; for example:\n  %s", st.invalid.Load(), st.other.Load(), strings.Join(st.examples, "\n  "))
	}
	if unexplained != 0 {
		t.Errorf("%d refresh token reuse events not explained by a SIGKILL after the answer, want 0", unexplained)
	}
	if len(lost) > 0 {
		t.Errorf("credentials without a valid token after the run (refresh token lost?): %v", lost)
	}
	// Last, so that a CI excerpt of the output's end shows what happened.
	for _, story := range stories {
		t.Error(story)
	}
	if st.valid.Load() == 0 {
		t.Error("no valid handout at all")
	}
}

// clientID is credential n's client id in environ.
func clientID(environ []string, n string) string {
	want := "TOKENBROKER_" + strings.ToUpper(strings.ReplaceAll(n, "-", "_")) + "_CLIENT_ID="
	for _, kv := range environ {
		if id, ok := strings.CutPrefix(kv, want); ok {
			return id
		}
	}
	return ""
}

// hammer fetches tokens from one broker until ctx ends, and classifies
// every answer.
func hammer(ctx context.Context, sock string, names []string, p *oauthtest.Provider, st *chaosStats) {
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		}}}
	for ctx.Err() == nil {
		n := names[rand.IntN(len(names))]
		st.attempted.Add(1)
		code, h, err := tryGet(c, n)
		now := time.Now()
		switch {
		case err != nil:
			st.brokerDown.Add(1)
			time.Sleep(20 * time.Millisecond)
		case code == 200:
			exp, perr := time.Parse(time.RFC3339, h.ExpiresAt)
			// expires_in and expires_at are whole seconds, rounded down: a
			// token with 0.99 s left says 0.
			if !p.Valid(h.AccessToken) || h.ExpiresIn < 0 || perr != nil || !exp.Add(time.Second).After(now) {
				st.invalid.Add(1)
				st.mu.Lock()
				if st.invalidBy[n]++; st.invalidBy[n] == 1 {
					st.firstInvalid[n] = now
				}
				st.invalidAt[n] = append(st.invalidAt[n], now)
				st.mu.Unlock()
				st.note("%s: 200 with an invalid or expired token (expires_in %d, expires_at %s)", n, h.ExpiresIn, h.ExpiresAt)
				continue
			}
			st.valid.Add(1)
			st.mu.Lock()
			st.lastValid[n] = now
			st.mu.Unlock()
		case code == 503:
			st.unavailable.Add(1)
			time.Sleep(10 * time.Millisecond)
		default:
			st.other.Add(1)
			st.note("%s: %d %s %s", n, code, h.Error, h.Description)
		}
	}
}

func tryGet(c *http.Client, name string) (int, handout, error) {
	req, _ := http.NewRequest(http.MethodGet, "http://tokenbroker/v1/tokens/"+name, nil)
	req.Header.Set("X-Tokenbroker", "1")
	resp, err := c.Do(req)
	if err != nil {
		return 0, handout{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, handout{}, err
	}
	var h handout
	if err := json.Unmarshal(body, &h); err != nil {
		return resp.StatusCode, handout{Description: "not JSON"}, nil
	}
	return resp.StatusCode, h, nil
}

func maxTime(ts ...time.Time) time.Time {
	var m time.Time
	for _, t := range ts {
		if t.After(m) {
			m = t
		}
	}
	return m
}

// reuseStory tells what led to reuse r: the faults and the brokers' log
// lines about its credential from shortly before the token was first spent
// until the reuse.
func reuseStory(r oauthtest.Reuse, clientOf map[string]string, timeline string, brokers []*chaosBroker) string {
	name := r.ClientID
	for n, id := range clientOf {
		if id == r.ClientID {
			name = n
		}
	}
	from, to := r.SpentAt.Add(-8*time.Second), r.At.Add(time.Second)
	in := func(at time.Time) bool { return !at.Before(from) && !at.After(to) }
	type line struct {
		at   time.Time
		text string
	}
	var lines []line
	day := r.SpentAt.UTC().Format("2006-01-02 ")
	for _, l := range strings.Split(timeline, "\n") {
		if at, err := time.Parse("2006-01-02 15:04:05.000", day+strings.SplitN(l, " ", 2)[0]); err == nil && in(at) {
			lines = append(lines, line{at, "fault: " + strings.SplitN(l, " ", 2)[1]})
		}
	}
	for _, b := range brokers {
		for _, l := range strings.Split(b.logs.String(), "\n") {
			var rec map[string]any
			if json.Unmarshal([]byte(l), &rec) != nil {
				continue
			}
			at, _ := time.Parse(time.RFC3339Nano, fmt.Sprint(rec["time"]))
			cred, hasCred := rec["credential"]
			key, hasKey := rec["key"].(string)
			if !in(at) || (hasCred && cred != name) || (hasKey && !strings.HasPrefix(key, name+".")) {
				continue // another credential's
			}
			var kv []string
			for k, v := range rec {
				if k != "time" && k != "level" && k != "msg" {
					kv = append(kv, fmt.Sprintf("%s=%v", k, v))
				}
			}
			slices.Sort(kv)
			lines = append(lines, line{at, fmt.Sprintf("broker %s: %v %s", b.name, rec["msg"], strings.Join(kv, " "))})
		}
	}
	slices.SortStableFunc(lines, func(a, b line) int { return a.at.Compare(b.at) })
	if len(lines) > 40 {
		lines = lines[len(lines)-40:]
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "reuse of a %s refresh token first spent at %s, presented again at %s (successor presented: %v):",
		name, r.SpentAt.UTC().Format("15:04:05.000"), r.At.UTC().Format("15:04:05.000"), r.SuccessorPresented)
	for _, l := range lines {
		fmt.Fprintf(&sb, "\n  %s %s", l.at.UTC().Format("15:04:05.000"), l.text)
	}
	return sb.String()
}

// CI shows only the end of a failed run's output, so each unexplained
// reuse is told there: the faults, and that credential's log lines.
func TestReuseStory(t *testing.T) {
	spent := time.Date(2026, 12, 2, 0, 13, 1, 0, time.UTC)
	b := &chaosBroker{name: "a", logs: &tbtest.SyncBuffer{}}
	fmt.Fprintf(b.logs, `{"time":%q,"level":"INFO","msg":"token refreshed","credential":"firework-user"}`+"\n", spent.Format(time.RFC3339Nano))
	fmt.Fprintf(b.logs, `{"time":%q,"level":"INFO","msg":"token refreshed","credential":"firework"}`+"\n", spent.Format(time.RFC3339Nano))
	fmt.Fprintf(b.logs, `{"time":%q,"level":"WARN","msg":"shared store unreachable","key":"firework-user.0a1b"}`+"\n", spent.Add(time.Millisecond).Format(time.RFC3339Nano))
	fmt.Fprintf(b.logs, `{"time":%q,"level":"WARN","msg":"old","credential":"firework-user"}`+"\n", spent.Add(-time.Minute).Format(time.RFC3339Nano))
	timeline := "00:13:00.500 action 3 (broker b)\n00:12:00.000 action 0 (broker a)\n"
	got := reuseStory(oauthtest.Reuse{ClientID: "fw-user", SpentAt: spent, At: spent.Add(2 * time.Second)},
		map[string]string{"firework-user": "fw-user", "firework": "fw"}, timeline, []*chaosBroker{b})
	want := `reuse of a firework-user refresh token first spent at 00:13:01.000, presented again at 00:13:03.000 (successor presented: false):
  00:13:00.500 fault: action 3 (broker b)
  00:13:01.000 broker a: token refreshed credential=firework-user
  00:13:01.001 broker a: shared store unreachable key=firework-user.0a1b`
	if got != want {
		t.Errorf("story:\n%s\nwant:\n%s", got, want)
	}
}
