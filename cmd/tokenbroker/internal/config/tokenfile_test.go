package config

import (
	"strings"
	"syscall"
	"testing"

	"github.com/tokenbroker/tokenbroker/api/tokenfile"
)

var tokenFileBase = []string{"TOKENBROKER_CREDENTIALS=a,b", "TOKENBROKER_A_TOKEN_URL=https://auth.example.com/token",
	"TOKENBROKER_A_CLIENT_ID=id", "TOKENBROKER_A_CLIENT_SECRET=s", "TOKENBROKER_B_TOKEN_URL=https://auth.example.com/token",
	"TOKENBROKER_B_CLIENT_ID=id2", "TOKENBROKER_B_CLIENT_SECRET=s2"}

// The token file's settings, with their defaults, and each mistake named
// by its variable.
func TestTokenFile(t *testing.T) {
	setenv(t, append(tokenFileBase, "TOKENBROKER_A_TOKEN_FILE=/run/tokens/a", "TOKENBROKER_A_TOKEN_FILE_FORMAT=Header",
		"TOKENBROKER_A_TOKEN_FILE_MODE=0640", "TOKENBROKER_A_TOKEN_FILE_GROUP=4242", "TOKENBROKER_A_TOKEN_FILE_SIGNAL=usr1",
		"TOKENBROKER_A_TOKEN_FILE_PIDFILE=/run/app.pid", "TOKENBROKER_B_TOKEN_FILE=/run/tokens/b")...)
	c, err := Load()
	if err != nil || len(c.Warnings) > 0 {
		t.Fatalf("Load: %v %v", err, c.Warnings)
	}
	want := map[string]tokenfile.File{
		"a": {Path: "/run/tokens/a", Format: tokenfile.Header, Mode: 0o640, GID: 4242, Signal: syscall.SIGUSR1, PIDFile: "/run/app.pid"},
		"b": {Path: "/run/tokens/b", Format: tokenfile.Raw, Mode: 0o600, GID: -1},
	}
	for _, cc := range c.Credentials {
		if cc.TokenFile != want[cc.Name] {
			t.Errorf("%s: %+v; want %+v", cc.Name, cc.TokenFile, want[cc.Name])
		}
	}
	var b strings.Builder
	WriteCheck(&b, c)
	if !strings.Contains(b.String(), "/run/tokens/a (header, mode 0640, group 4242, SIGUSR1 to the pid in /run/app.pid; removed while there is no token)") {
		t.Errorf("check does not show the token file:\n%s", b.String())
	}

	for _, tc := range []struct {
		env  []string
		want string // the variable and a word of the problem
	}{
		{[]string{"TOKENBROKER_A_TOKEN_FILE=tokens/a"}, "TOKENBROKER_A_TOKEN_FILE: \"tokens/a\" is not an absolute path; use one"},
		{[]string{"TOKENBROKER_A_TOKEN_FILE=/t/a", "TOKENBROKER_A_TOKEN_FILE_MODE=0620"}, "TOKENBROKER_A_TOKEN_FILE_MODE: 0620 lets others write"},
		{[]string{"TOKENBROKER_A_TOKEN_FILE=/t/a", "TOKENBROKER_A_TOKEN_FILE_MODE=0200"}, "TOKENBROKER_A_TOKEN_FILE_MODE: 0200 lets nobody read"},
		{[]string{"TOKENBROKER_A_TOKEN_FILE=/t/a", "TOKENBROKER_A_TOKEN_FILE_FORMAT=yaml"}, "TOKENBROKER_A_TOKEN_FILE_FORMAT: \"yaml\" is not raw, header or json"},
		{[]string{"TOKENBROKER_A_TOKEN_FILE=/t/a", "TOKENBROKER_A_TOKEN_FILE_GROUP=0"}, "TOKENBROKER_A_TOKEN_FILE_GROUP: is root's group"},
		{[]string{"TOKENBROKER_A_TOKEN_FILE=/t/a", "TOKENBROKER_A_TOKEN_FILE_SIGNAL=HUP"}, "TOKENBROKER_A_TOKEN_FILE_PIDFILE: required with TOKENBROKER_A_TOKEN_FILE_SIGNAL"},
		{[]string{"TOKENBROKER_A_TOKEN_FILE=/t/a", "TOKENBROKER_A_TOKEN_FILE_SIGNAL=KILL", "TOKENBROKER_A_TOKEN_FILE_PIDFILE=/p"}, "TOKENBROKER_A_TOKEN_FILE_SIGNAL: \"KILL\" is not HUP, USR1 or USR2"},
		{[]string{"TOKENBROKER_A_TOKEN_FILE=/t/a", "TOKENBROKER_B_TOKEN_FILE=/t/a"}, "TOKENBROKER_B_TOKEN_FILE: \"/t/a\" is also credential a's token file"},
		{[]string{"TOKENBROKER_A_TOKEN_FILE=/var/lib/tb/a"}, "TOKENBROKER_A_TOKEN_FILE: \"/var/lib/tb/a\" is in the state directory"},
	} {
		setenv(t, append(tokenFileBase, tc.env...)...)
		if _, err := Load(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v; want %q", tc.env, err, tc.want)
		}
	}

	setenv(t, append(tokenFileBase, "TOKENBROKER_A_TOKEN_FILE_SIGNAL=HUP", "TOKENBROKER_A_TOKEN_FILE=/t/a", "TOKENBROKER_A_TOKEN_FILE_MODE=0644",
		"TOKENBROKER_B_TOKEN_FILE_GROUP=4242", "TOKENBROKER_A_TOKEN_FILE_PIDFILE=/p", "TOKENBROKER_A_TOKEN_FILES=/x")...)
	c, err = Load()
	warnings := strings.Join(c.Warnings, "\n")
	for _, want := range []string{"TOKENBROKER_A_TOKEN_FILE_MODE: 0644 lets every local user read", "TOKENBROKER_B_TOKEN_FILE_GROUP: has no effect without TOKENBROKER_B_TOKEN_FILE"} {
		if !strings.Contains(warnings, want) {
			t.Errorf("no warning %q:\n%s", want, warnings)
		}
	}
	// TOKEN_FILE ends like the _FILE settings, but it is not one.
	if err == nil || !strings.Contains(err.Error(), "TOKENBROKER_A_TOKEN_FILES: credential a has no such setting; did you mean TOKENBROKER_A_TOKEN_FILE?") {
		t.Errorf("a misspelt setting: %v", err)
	}
}
