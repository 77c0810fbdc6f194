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
