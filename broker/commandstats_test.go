package broker

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/tokenbroker/tokenbroker/broker/store/storetest"
)

// The Redis side of TestRedisCommandsPerHandoutAndRefresh, counted by the
// server: INFO commandstats after CONFIG RESETSTAT, around 10 000 handouts
// and then one forced refresh (the scripts already cached, as in steady
// state). The server counts the commands the clients sent (EVALSHA, HGET)
// and also those the scripts ran (HGET, HSET, PUBLISH, SET, DEL); the
// broker's client hook counts only the first kind.
func TestRedisCommandstats(t *testing.T) {
	srv, b, hook := countedBroker(t)
	ctx := context.Background()
	if _, err := b.Token(ctx, "fw"); err != nil {
		t.Fatal(err)
	}
	if err := b.Refresh(ctx, "fw"); err != nil { // caches every script
		t.Fatal(err)
	}
	waitQuiet(t, hook) // the events and their re-reads, before reset()

	admin := srv.Client()
	stats := func() map[string]int {
		t.Helper()
		info, err := admin.Info(ctx, "commandstats").Result()
		if err != nil {
			t.Fatal(err)
		}
		return parseCommandstats(info)
	}
	reset := func() {
		t.Helper()
		if err := admin.ConfigResetStat(ctx).Err(); err != nil {
			t.Fatal(err)
		}
	}

	reset()
	before := hook.N.Load()
	for range 10000 {
		if _, err := b.Token(ctx, "fw"); err != nil {
			t.Fatal(err)
		}
	}
	handoutCmds := stats()
	if n := hook.N.Load() - before; n != 0 || len(handoutCmds) != 0 {
		t.Errorf("10000 handouts: %d commands sent by the broker, server counted %v; want none", n, handoutCmds)
	}

	reset()
	before = hook.N.Load()
	if err := b.Refresh(ctx, "fw"); err != nil {
		t.Fatal(err)
	}
	waitQuiet(t, hook) // the event and its re-read
	sent := hook.N.Load() - before
	refreshCmds := stats()
	total := 0
	for _, n := range refreshCmds {
		total += n
	}
	t.Logf("10000 handouts: 0 commands sent, server counted %d", len(handoutCmds))
	t.Logf("one refresh: %d commands sent by the broker (client hook); server INFO commandstats: %s (%d calls, script bodies included)",
		sent, formatCommandstats(refreshCmds), total)
	if sent > 6 {
		t.Errorf("a refresh sent %d Redis commands; want <= 6", sent)
	}
}

// parseCommandstats reads INFO commandstats into calls by command, leaving
// out the commands this test sends itself (INFO, CONFIG).
func parseCommandstats(info string) map[string]int {
	m := map[string]int{}
	for l := range strings.Lines(info) {
		name, rest, ok := strings.Cut(strings.TrimSpace(l), ":")
		cmd, isStat := strings.CutPrefix(name, "cmdstat_")
		if !ok || !isStat || cmd == "info" || strings.HasPrefix(cmd, "config") {
			continue
		}
		for f := range strings.SplitSeq(rest, ",") {
			if v, ok := strings.CutPrefix(f, "calls="); ok {
				n, _ := strconv.Atoi(v)
				m[cmd] = n
			}
		}
	}
	return m
}

func formatCommandstats(m map[string]int) string {
	var parts []string
	for _, k := range slices.Sorted(func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}) {
		parts = append(parts, fmt.Sprintf("%s=%d", strings.ToUpper(k), m[k]))
	}
	return strings.Join(parts, " ")
}

var _ redis.Hook = (*storetest.CountingHook)(nil)
