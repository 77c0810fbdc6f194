package config

import (
	"os"
	"slices"
	"strings"
	"testing"
)

// setenv makes kv the only TOKENBROKER_ variables, for this test.
func setenv(t *testing.T, kv ...string) {
	t.Helper()
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, Prefix+"_") {
			t.Setenv(k, "")
			if err := os.Unsetenv(k); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Setenv("TOKENBROKER_SOCKET", "/run/tb/tb.sock")
	t.Setenv("TOKENBROKER_STATE_DIR", "/var/lib/tb")
	for _, e := range kv {
		k, v, _ := strings.Cut(e, "=")
		t.Setenv(k, v)
	}
}

// envconfig reads an unprefixed $X for a field tagged envconfig:"X": no
// field may be, or a stray $PASSWORD would become every credential's.
func TestUnprefixedVariablesAreNeverRead(t *testing.T) {
	setenv(t, "TOKENBROKER_CREDENTIALS=a", "TOKENBROKER_A_TOKEN_URL=https://auth.example.com/token",
		"TOKENBROKER_A_CLIENT_ID=id", "TOKENBROKER_A_CLIENT_SECRET=s")
	for _, m := range suffixes {
		for _, bare := range m {
			t.Setenv(bare, "stray-"+bare) // e.g. $PASSWORD, $CLIENT_SECRET, $SOCKET
		}
	}
	c, err := Load()
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	var b strings.Builder
	WriteCheck(&b, c)
	cc := c.Credentials[0]
	if strings.Contains(b.String(), "stray-") || !cc.Password.IsZero() || !cc.RefreshToken.IsZero() || cc.Username != "" ||
		cc.Client.Secret.Reveal() != "s" || c.Redis != nil {
		t.Errorf("an unprefixed variable was read:\n%s", b.String())
	}
}

// A blank value counts as unset: the default applies, and no problem.
func TestBlankIsUnset(t *testing.T) {
	setenv(t, "TOKENBROKER_CREDENTIALS=a", "TOKENBROKER_A_TOKEN_URL=https://auth.example.com/token",
		"TOKENBROKER_A_CLIENT_ID=id", "TOKENBROKER_A_CLIENT_SECRET=s",
		"TOKENBROKER_REQUEST_TIMEOUT=", "TOKENBROKER_REFRESH_AT=  ", "TOKENBROKER_A_DEFAULT_LIFETIME=", "TOKENBROKER_A_PASSWORD=")
	c, err := Load()
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if c.RequestTimeout.String() != "30s" || c.RefreshAt != 0.85 || !c.Credentials[0].Password.IsZero() {
		t.Errorf("blank values were not defaults: timeout %s, refresh at %g", c.RequestTimeout, c.RefreshAt)
	}
}

// Every problem at once, decode and semantic, in every section.
func TestEveryProblemAtOnce(t *testing.T) {
	setenv(t, "TOKENBROKER_CREDENTIALS=a,b", "TOKENBROKER_REFRESH_AT=x", "TOKENBROKER_HANDOUT_WAIT=-1s",
		"TOKENBROKER_REDIS_LOCK_TTL=soon", "TOKENBROKER_A_DEFAULT_LIFETIME=1 hour", "TOKENBROKER_A_METHOD=PUT",
		"TOKENBROKER_A_REFRESH_SENDS_SECRET=maybe", "TOKENBROKER_B_CLIENT_ID=id", "TOKENBROKER_B_CLIENT_AUTH=jwt",
		"TOKENBROKER_B_TOKEN_URL=ftp://x", "TOKENBROKER_B_CLIENT_SECRET=hunter2-secret")
	_, err := Load()
	if err == nil {
		t.Fatal("Load succeeded")
	}
	for _, v := range []string{"REFRESH_AT", "HANDOUT_WAIT", "REDIS_LOCK_TTL", "A_DEFAULT_LIFETIME", "A_METHOD",
		"A_REFRESH_SENDS_SECRET", "A_CLIENT_ID", "A_TOKEN_URL", "B_CLIENT_AUTH", "B_TOKEN_URL"} {
		if !strings.Contains(err.Error(), "TOKENBROKER_"+v+": ") {
			t.Errorf("no problem names TOKENBROKER_%s:\n%v", v, err)
		}
	}
	if strings.Contains(err.Error(), "hunter2") {
		t.Errorf("a secret was printed:\n%v", err)
	}
}

// AUTHORIZE_URL and REDIRECT_URI without GRANT mean authorize: the grant
// is refresh_token, not a client_credentials the provider would refuse.
func TestAuthorizeSettingsInferRefreshToken(t *testing.T) {
	setenv(t, "TOKENBROKER_CREDENTIALS=a", "TOKENBROKER_A_TOKEN_URL=https://auth.example.com/token",
		"TOKENBROKER_A_AUTHORIZE_URL=https://auth.example.com/authorize", "TOKENBROKER_A_REDIRECT_URI=http://127.0.0.1:8765/cb",
		"TOKENBROKER_A_CLIENT_ID=id", "TOKENBROKER_A_CLIENT_SECRET=s")
	c, err := Load()
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if g := c.Credentials[0].Grant; g != "refresh_token" {
		t.Errorf("grant %s, want refresh_token", g)
	}
}

// CLIENT_AUTH takes the RFC 7591 names beside today's words; none is a
// public client that sends no secret.
func TestClientAuthNames(t *testing.T) {
	base := []string{"TOKENBROKER_CREDENTIALS=a", "TOKENBROKER_A_TOKEN_URL=https://auth.example.com/token", "TOKENBROKER_A_CLIENT_ID=id"}
	for _, tc := range []struct {
		auth, secret string
		ok           bool
	}{
		{"client_secret_basic", "s", true}, {"client_secret_post", "s", true}, {"basic", "s", true}, {"params", "s", true},
		{"none", "", false}, // client_credentials needs a confidential client
		{"jwt", "s", false},
	} {
		env := append([]string{"TOKENBROKER_A_CLIENT_AUTH=" + tc.auth, "TOKENBROKER_A_CLIENT_SECRET=" + tc.secret}, base...)
		setenv(t, env...)
		if _, err := Load(); (err == nil) != tc.ok {
			t.Errorf("CLIENT_AUTH=%s: err %v, want ok %t", tc.auth, err, tc.ok)
		}
	}
	setenv(t, append([]string{"TOKENBROKER_A_CLIENT_AUTH=none", "TOKENBROKER_A_REFRESH_TOKEN=r"}, base...)...)
	if _, err := Load(); err != nil {
		t.Errorf("a public refresh_token client: %v", err)
	}
}

// check warns when the environment nears the size Linux lets an exec carry.
func TestEnvironmentSizeWarning(t *testing.T) {
	p := &problems{}
	checkEnvironSize(p, []string{"A=" + strings.Repeat("x", execLimit/2)})
	if len(p.warnings) != 0 {
		t.Errorf("warned at 50%%: %v", p.warnings)
	}
	checkEnvironSize(p, []string{"A=" + strings.Repeat("x", execLimit*8/10)})
	if len(p.warnings) != 1 || !strings.Contains(p.warnings[0], "_FILE") {
		t.Errorf("at 80%%: warnings %v, want one advising _FILE", p.warnings)
	}
}

// A credential whose settings would read a global variable is refused:
// TOKENBROKER_REDIS_PASSWORD is the fleet's, not credential redis's.
func TestNameThatReadsAGlobalSetting(t *testing.T) {
	setenv(t, "TOKENBROKER_CREDENTIALS=redis", "TOKENBROKER_REDIS_CLIENT_ID=id")
	_, err := Load()
	if err == nil || !strings.Contains(err.Error(), "TOKENBROKER_CREDENTIALS: redis would read TOKENBROKER_REDIS_") {
		t.Errorf("err %v; want TOKENBROKER_CREDENTIALS refusing redis", err)
	}
}

// A reload watches the files the configuration reads, named by the
// type:"file" settings, and never a token file, which the broker writes.
func TestFileVariables(t *testing.T) {
	vars := FileVariables([]string{"a-b"})
	for _, want := range []string{"TOKENBROKER_ENCRYPTION_KEY_FILE", "TOKENBROKER_REDIS_PASSWORD_FILE", "TOKENBROKER_REDIS_CA_FILE",
		"TOKENBROKER_A_B_CLIENT_SECRET_FILE", "TOKENBROKER_A_B_CLIENT_SECRET_PREVIOUS_FILE", "TOKENBROKER_A_B_REFRESH_TOKEN_FILE", "TOKENBROKER_A_B_PASSWORD_FILE"} {
		if !slices.Contains(vars, want) {
			t.Errorf("FileVariables lacks %s: %v", want, vars)
		}
	}
	if slices.Contains(vars, "TOKENBROKER_A_B_TOKEN_FILE") || len(vars) != 7 {
		t.Errorf("FileVariables = %v; want the 7 file settings and no TOKEN_FILE", vars)
	}
}
