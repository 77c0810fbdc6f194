package main

import (
	"strings"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/api/client"
)

// status colours the state on a terminal and keeps the columns aligned;
// elsewhere (a pipe, NO_COLOR) it writes no escape codes.
func TestStatusColour(t *testing.T) {
	creds := []client.CredentialStatus{
		{Name: "a", Provider: "firework", Grant: "client_credentials", State: "ok", ExpiresAt: time.Now().Add(time.Hour)},
		{Name: "bb", Provider: "livepush", Grant: "refresh_token", State: "reauthorize", LastError: "invalid_grant"},
	}
	var plain, coloured strings.Builder
	printStatus(&plain, creds, false, false)
	printStatus(&coloured, creds, false, true)
	if strings.Contains(plain.String(), "\x1b[") {
		t.Errorf("colour without a terminal:\n%q", plain.String())
	}
	for _, want := range []string{"\x1b[32mok\x1b[0m", "\x1b[31mreauthorize\x1b[0m"} {
		if !strings.Contains(coloured.String(), want) {
			t.Errorf("no %q in\n%q", want, coloured.String())
		}
	}
	// The column after STATE starts at the same offset on every line.
	col := -1
	for _, line := range strings.Split(strings.TrimSpace(coloured.String()), "\n") {
		i := strings.Index(line, "\x1b[0m")
		rest := line[i+4:]
		off := i + 4 + len(rest) - len(strings.TrimLeft(rest, " "))
		if col >= 0 && off != col {
			t.Errorf("misaligned columns:\n%s", coloured.String())
		}
		col = off
	}
}

// status selects by name and pattern, and --problems keeps what is not ok;
// a pattern that selects nothing is an error, not an empty healthy list.
func TestSelectStatus(t *testing.T) {
	creds := []client.CredentialStatus{
		{Name: "fw-a", State: "ok"}, {Name: "fw-b", State: "retrying"}, {Name: "lp", State: "reauthorize"}, {Name: "ing", State: "pending"},
	}
	names := func(cs []client.CredentialStatus) string {
		var out []string
		for _, c := range cs {
			out = append(out, c.Name)
		}
		return strings.Join(out, ",")
	}
	for _, tc := range []struct {
		patterns []string
		problems bool
		want     string
		matched  int
		err      string
	}{
		{nil, false, "fw-a,fw-b,lp,ing", 4, ""},
		{nil, true, "fw-b,lp,ing", 4, ""},
		{[]string{"fw-*"}, false, "fw-a,fw-b", 2, ""},
		{[]string{"fw-*"}, true, "fw-b", 2, ""},
		{[]string{"fw-a"}, true, "", 1, ""},
		{[]string{"lp", "fw-[a]"}, false, "fw-a,lp", 2, ""},
		{[]string{"fw-a", "firewrk"}, false, "", 0, `"firewrk"`},
	} {
		got, matched, err := selectStatus(creds, tc.patterns, tc.problems)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: error %v, want one naming %s", tc.patterns, err, tc.err)
			}
			continue
		}
		if err != nil || names(got) != tc.want || matched != tc.matched {
			t.Errorf("%q problems=%v: %q (%d matched), %v; want %q (%d)", tc.patterns, tc.problems, names(got), matched, err, tc.want, tc.matched)
		}
	}
}

// Bad flags and patterns are usage errors, found before the socket is dialed.
func TestStatusUsage(t *testing.T) {
	t.Setenv("TOKENBROKER_SOCKET", "/nonexistent/tb.sock")
	for _, args := range [][]string{{"--jsn"}, {"fw-[a"}, {"-x", "fw"}} {
		var stdout, stderr strings.Builder
		if code := statusCmd(args, &stdout, &stderr); code != exitConfig || !strings.Contains(stderr.String(), "usage: tokenbroker status") {
			t.Errorf("status %q: exit %d, stderr %q; want %d and the usage", args, code, stderr.String(), exitConfig)
		}
	}
}
