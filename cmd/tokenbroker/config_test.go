package main

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokenbroker/tokenbroker/api/client"
	"github.com/tokenbroker/tokenbroker/cmd/tokenbroker/internal/config"
	"github.com/tokenbroker/tokenbroker/sources"
	"github.com/tokenbroker/tokenbroker/sources/oauthtest"
)

// baseEnv is kv and explicit paths, so that no test depends on the uid or
// HOME it runs under. The first entry for a name wins, so kv overrides.
func baseEnv(kv ...string) []string {
	return append(slices.Clone(kv),
		"TOKENBROKER_SOCKET=/run/tb/tb.sock",
		"TOKENBROKER_STATE_DIR=/var/lib/tb",
	)
}

// secretFile writes content to a new file with the given mode and returns its path.
func secretFile(t *testing.T, content string, mode fs.FileMode) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
	return path
}

// errorLines splits a loadConfig error into its problems, checking that each
// names a variable and says what to do.
func errorLines(t *testing.T, err error) []string {
	t.Helper()
	if err == nil {
		return nil
	}
	lines := strings.Split(err.Error(), "\n")
	for _, l := range lines {
		if !strings.HasPrefix(l, "TOKENBROKER_") || !strings.Contains(l, ": ") || !strings.Contains(l, "; ") {
			t.Errorf("problem %q does not read \"TOKENBROKER_X_Y: what is wrong; what to do\"", l)
		}
	}
	return lines
}

// blames reports whether some line is about variable v.
func blames(lines []string, v string) bool {
	return slices.ContainsFunc(lines, func(l string) bool { return strings.HasPrefix(l, v+": ") })
}

func mustLoad(t *testing.T, environ []string) Config {
	t.Helper()
	c, err := loadConfig(environ)
	if err != nil {
		t.Fatalf("loadConfig: unexpected error:\n%v", err)
	}
	return c
}

func TestLoadConfigGlobals(t *testing.T) {
	t.Run("defaults", func(t *testing.T) {
		c := mustLoad(t, baseEnv("TOKENBROKER_CREDENTIALS=a", "TOKENBROKER_A_CLIENT_ID=id", "TOKENBROKER_A_CLIENT_SECRET=s",
			"TOKENBROKER_A_TOKEN_URL=https://auth.example.com/token"))
		want := Config{Socket: "/run/tb/tb.sock", StateDir: "/var/lib/tb", LogLevel: slog.LevelInfo, LogFormat: "",
			RefreshAt: 0.85, RequestTimeout: 30 * time.Second, AnswerTimeout: 5 * time.Minute, HandoutWait: 5 * time.Second, BackoffMax: 5 * time.Minute, ProbeInterval: 5 * time.Second, ProviderConcurrency: 4, RedisPrefix: "tokenbroker:", RedisLockTTL: 15 * time.Second, SocketMode: 0o660}
		got := c
		got.Credentials, got.Warnings = nil, nil
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("got  %+v\nwant %+v", got, want)
		}
		if len(c.Warnings) != 0 {
			t.Errorf("unexpected warnings: %q", c.Warnings)
		}
	})
	t.Run("fleet and encryption", func(t *testing.T) {
		key := strings.Repeat("ab", 32)
		c := mustLoad(t, baseEnv("TOKENBROKER_CREDENTIALS=a", "TOKENBROKER_A_CLIENT_ID=id", "TOKENBROKER_A_CLIENT_SECRET=s",
			"TOKENBROKER_A_TOKEN_URL=https://auth.example.com/token", "TOKENBROKER_REDIS_URL=redis://:pw@10.0.0.1:6380/3",
			"TOKENBROKER_REDIS_PREFIX=fleet-a:", "TOKENBROKER_ENCRYPTION_KEY=new:"+key+",old:"+key[:62]+"cd"))
		if c.Redis == nil || c.Redis.Addrs[0] != "10.0.0.1:6380" || c.Redis.DB != 3 || c.RedisPrefix != "fleet-a:" || len(c.EncryptionKeys) != 2 || c.EncryptionKeys[0].ID != "new" {
			t.Errorf("got redis %+v prefix %q keys %v", c.Redis, c.RedisPrefix, c.EncryptionKeys)
		}
		var out bytes.Buffer
		config.WriteCheck(&out, c)
		if strings.Contains(out.String(), key[:16]) || strings.Contains(out.String(), ":pw@") || !strings.Contains(out.String(), `key "new"`) {
			t.Errorf("check output shows key material or the Redis password, or not the key id:\n%s", out.String())
		}
		c = mustLoad(t, baseEnv("TOKENBROKER_CREDENTIALS=a", "TOKENBROKER_A_CLIENT_ID=id", "TOKENBROKER_A_CLIENT_SECRET=s",
			"TOKENBROKER_A_TOKEN_URL=https://auth.example.com/token", "TOKENBROKER_REDIS_ADDRS=10.0.0.1:26379, 10.0.0.2:26379",
			"TOKENBROKER_REDIS_SENTINEL_MASTER=main", "TOKENBROKER_REDIS_PASSWORD=pw"))
		if c.Redis == nil || c.Redis.MasterName != "main" || len(c.Redis.Addrs) != 2 || c.Redis.Password != "pw" {
			t.Errorf("sentinel settings: %+v", c.Redis)
		}
		_, err := loadConfig(baseEnv("TOKENBROKER_CREDENTIALS=a", "TOKENBROKER_A_CLIENT_ID=id", "TOKENBROKER_A_CLIENT_SECRET=s",
			"TOKENBROKER_A_TOKEN_URL=https://auth.example.com/token", "TOKENBROKER_REDIS_URL=http://x", "TOKENBROKER_ENCRYPTION_KEY=k:short"))
		for _, want := range []string{"TOKENBROKER_REDIS_URL", "TOKENBROKER_ENCRYPTION_KEY"} {
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("bad %s not reported: %v", want, err)
			}
		}
	})
	t.Run("all set", func(t *testing.T) {
		c := mustLoad(t, baseEnv("TOKENBROKER_CREDENTIALS=a", "TOKENBROKER_A_CLIENT_ID=id", "TOKENBROKER_A_CLIENT_SECRET=s",
			"TOKENBROKER_A_TOKEN_URL=https://auth.example.com/token",
			"TOKENBROKER_LOG_LEVEL=DEBUG", "TOKENBROKER_LOG_FORMAT=json", "TOKENBROKER_REFRESH_AT=0.5",
			"TOKENBROKER_REQUEST_TIMEOUT=10s", "TOKENBROKER_ANSWER_TIMEOUT=2m", "TOKENBROKER_HANDOUT_WAIT=250ms", "TOKENBROKER_BACKOFF_MAX=1m",
			"TOKENBROKER_PROVIDER_CONCURRENCY= 2 ", "TOKENBROKER_PROBE_INTERVAL=2s", "TOKENBROKER_METRICS_PER_CREDENTIAL=true"))
		if c.LogLevel != slog.LevelDebug || c.LogFormat != "json" || c.RefreshAt != 0.5 || c.RequestTimeout != 10*time.Second ||
			c.AnswerTimeout != 2*time.Minute || c.HandoutWait != 250*time.Millisecond || c.BackoffMax != time.Minute ||
			c.ProviderConcurrency != 2 || c.ProbeInterval != 2*time.Second || !c.MetricsPerCredential {
			t.Errorf("got %+v", c)
		}
	})
}

func TestDefaultPaths(t *testing.T) {
	env := func(kv ...string) func(string) string {
		m := environMap(kv)
		return func(k string) string { return m[k] }
	}
	for _, tc := range []struct {
		name          string
		uid           int
		env           []string
		socket, state string
	}{
		{"root", 0, []string{"XDG_RUNTIME_DIR=/run/user/0", "HOME=/root"}, "/run/tokenbroker/tokenbroker.sock", "/var/lib/tokenbroker"},
		{"user with XDG", 1000, []string{"XDG_RUNTIME_DIR=/run/user/1000", "XDG_STATE_HOME=/home/u/.state", "HOME=/home/u"},
			"/run/user/1000/tokenbroker/tokenbroker.sock", "/home/u/.state/tokenbroker"},
		{"user with HOME only", 1000, []string{"HOME=/home/u"}, "/tmp/tokenbroker-1000/tokenbroker.sock", "/home/u/.local/state/tokenbroker"},
		{"relative XDG ignored", 1000, []string{"XDG_RUNTIME_DIR=run", "XDG_STATE_HOME=state", "HOME=/home/u"},
			"/tmp/tokenbroker-1000/tokenbroker.sock", "/home/u/.local/state/tokenbroker"},
		{"nothing", 1000, nil, "/tmp/tokenbroker-1000/tokenbroker.sock", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := client.SocketFor(tc.uid, env(tc.env...)); got != tc.socket {
				t.Errorf("SocketFor = %q, want %q", got, tc.socket)
			}
			got, ok := config.DefaultStateDir(tc.uid, env(tc.env...))
			if got != tc.state || ok != (tc.state != "") {
				t.Errorf("defaultStateDir = %q, %t; want %q", got, ok, tc.state)
			}
		})
	}
}

func TestLoadConfigProviders(t *testing.T) {
	pwFile := secretFile(t, "pw-from-file\n", 0o600)
	for _, tc := range []struct {
		name  string
		env   []string
		check func(t *testing.T, c CredentialConfig)
	}{
		{
			name: "firework client_credentials",
			env: []string{"TOKENBROKER_CREDENTIALS=fw", "TOKENBROKER_FW_PROVIDER=firework", "TOKENBROKER_FW_CLIENT_ID=fw-id",
				"TOKENBROKER_FW_CLIENT_SECRET=fw-secret", "TOKENBROKER_FW_SCOPES=videos:read, videos:write"},
			check: func(t *testing.T, c CredentialConfig) {
				wantEq(t, "grant", c.Grant, sources.ClientCredentials)
				wantEq(t, "token URL", c.Dialect.TokenURL, "https://api.firework.com/oauth/token")
				wantEq(t, "params", c.Dialect.Params, sources.Placement(""))
				wantEq(t, "client auth", c.Dialect.ClientAuth, oauth2.AuthStyleInParams)
				wantEq(t, "scopes", fmt.Sprint(c.Client.Scopes), "[videos:read videos:write]")
				wantEq(t, "secret", c.Client.Secret.Reveal(), "fw-secret")
				wantEq(t, "secret source", c.Sources["CLIENT_SECRET"], "TOKENBROKER_FW_CLIENT_SECRET")
			},
		},
		{
			name: "firework refresh_token with redirect",
			env: []string{"TOKENBROKER_CREDENTIALS=fw-user", "TOKENBROKER_FW_USER_PROVIDER=firework", "TOKENBROKER_FW_USER_CLIENT_ID=fw-id",
				"TOKENBROKER_FW_USER_REFRESH_TOKEN=rt-1\n", "TOKENBROKER_FW_USER_REDIRECT_URI=https://app.example.com/cb"},
			check: func(t *testing.T, c CredentialConfig) {
				wantEq(t, "grant (inferred)", c.Grant, sources.RefreshToken)
				wantEq(t, "params", c.Dialect.Params, sources.InQuery)
				wantEq(t, "omits secret", c.Dialect.RefreshOmitsSecret, true)
				wantEq(t, "sends redirect", c.Dialect.RefreshSendsRedirect, true)
				wantEq(t, "redirect", c.Client.RedirectURI, "https://app.example.com/cb")
				wantEq(t, "refresh token (line break trimmed)", c.RefreshToken.Reveal(), "rt-1")
				wantEq(t, "no client secret", c.Client.Secret.IsZero(), true)
			},
		},
		{
			name: "livepush",
			env: []string{"TOKENBROKER_CREDENTIALS=lp", "TOKENBROKER_LP_PROVIDER=livepush", "TOKENBROKER_LP_GRANT=refresh_token",
				"TOKENBROKER_LP_CLIENT_ID=lp-id", "TOKENBROKER_LP_CLIENT_SECRET=lp-secret", "TOKENBROKER_LP_REFRESH_TOKEN=rt"},
			check: func(t *testing.T, c CredentialConfig) {
				wantEq(t, "method", c.Dialect.Method, http.MethodGet)
				wantEq(t, "token types", fmt.Sprint(c.Dialect.TokenTypes), "[access_token]")
				wantEq(t, "token URL", c.Dialect.TokenURL, "https://tokens.livepush.io/oauth2/access_token")
			},
		},
		{
			name: "ingest client_credentials",
			env: []string{"TOKENBROKER_CREDENTIALS=ingest", "TOKENBROKER_INGEST_PROVIDER=ingest", "TOKENBROKER_INGEST_CLIENT_ID=in-id",
				"TOKENBROKER_INGEST_CLIENT_SECRET=in-secret", "TOKENBROKER_INGEST_SCOPES=read_videos,write_videos"},
			check: func(t *testing.T, c CredentialConfig) {
				wantEq(t, "grant", c.Grant, sources.ClientCredentials)
				wantEq(t, "separator", c.Dialect.ScopeSeparator, ",")
				wantEq(t, "client auth", c.Dialect.ClientAuth, oauth2.AuthStyleInHeader)
				wantEq(t, "accept", c.Dialect.Headers["Accept"], "application/vnd.ingest.v1+json")
				wantEq(t, "scopes", fmt.Sprint(c.Client.Scopes), "[read_videos write_videos]")
			},
		},
		{
			name: "vsrs password",
			env: []string{"TOKENBROKER_CREDENTIALS=vsrs", "TOKENBROKER_VSRS_PROVIDER=vsrs", "TOKENBROKER_VSRS_TOKEN_URL=https://vsrs.internal/oauth/token",
				"TOKENBROKER_VSRS_CLIENT_ID=v-id", "TOKENBROKER_VSRS_CLIENT_SECRET=v-secret", "TOKENBROKER_VSRS_USERNAME=svc-user",
				"TOKENBROKER_VSRS_PASSWORD_FILE=" + pwFile},
			check: func(t *testing.T, c CredentialConfig) {
				wantEq(t, "grant (inferred)", c.Grant, sources.Password)
				wantEq(t, "token URL", c.Dialect.TokenURL, "https://vsrs.internal/oauth/token")
				wantEq(t, "username", c.Username, "svc-user")
				wantEq(t, "password", c.Password.Reveal(), "pw-from-file")
				wantEq(t, "password source", c.Sources["PASSWORD"], "file "+pwFile+" (TOKENBROKER_VSRS_PASSWORD_FILE)")
			},
		},
		{
			name: "generic with every knob",
			env: []string{"TOKENBROKER_CREDENTIALS=gen", "TOKENBROKER_GEN_TOKEN_URL=https://auth.example.com/token?tenant=7",
				"TOKENBROKER_GEN_GRANT=refresh_token", "TOKENBROKER_GEN_CLIENT_ID=g-id", "TOKENBROKER_GEN_REFRESH_TOKEN=rt",
				"TOKENBROKER_GEN_METHOD=post", "TOKENBROKER_GEN_PARAMS=query", "TOKENBROKER_GEN_CLIENT_AUTH=params",
				"TOKENBROKER_GEN_SCOPE_SEPARATOR=comma", "TOKENBROKER_GEN_HEADERS=X-Tenant: 7; accept: application/json;",
				"TOKENBROKER_GEN_LIFETIME_FIELD=ttl", "TOKENBROKER_GEN_TOKEN_TYPES=access_token, mac",
				"TOKENBROKER_GEN_REFRESH_SENDS_SECRET=false", "TOKENBROKER_GEN_REFRESH_SENDS_REDIRECT_URI=true",
				"TOKENBROKER_GEN_REDIRECT_URI=http://localhost:8080/cb", "TOKENBROKER_GEN_DEFAULT_LIFETIME=15m",
				"TOKENBROKER_GEN_SCOPES=a b,c  a"},
			check: func(t *testing.T, c CredentialConfig) {
				d := c.Dialect
				wantEq(t, "provider", c.Provider, "generic")
				wantEq(t, "method", d.Method, http.MethodPost)
				wantEq(t, "params", d.Params, sources.InQuery)
				wantEq(t, "client auth", d.ClientAuth, oauth2.AuthStyleInParams)
				wantEq(t, "separator", d.ScopeSeparator, ",")
				wantEq(t, "headers", fmt.Sprint(d.Headers), "map[Accept:application/json X-Tenant:7]")
				wantEq(t, "lifetime fields", fmt.Sprint(d.LifetimeFields), "[ttl expires_in token_expires_in]")
				wantEq(t, "token types", fmt.Sprint(d.TokenTypes), "[access_token mac]")
				wantEq(t, "omits secret", d.RefreshOmitsSecret, true)
				wantEq(t, "sends redirect", d.RefreshSendsRedirect, true)
				wantEq(t, "default lifetime", d.DefaultLifetime, 15*time.Minute)
				wantEq(t, "scopes", fmt.Sprint(c.Client.Scopes), "[a b c]")
			},
		},
		{
			name: "generic knobs over a preset, literal separator",
			env: []string{"TOKENBROKER_CREDENTIALS=ing", "TOKENBROKER_ING_PROVIDER=ingest", "TOKENBROKER_ING_CLIENT_ID=id",
				"TOKENBROKER_ING_CLIENT_SECRET=s", "TOKENBROKER_ING_SCOPE_SEPARATOR= ", "TOKENBROKER_ING_CLIENT_AUTH=PARAMS",
				"TOKENBROKER_ING_LIFETIME_FIELD=expires_in"},
			check: func(t *testing.T, c CredentialConfig) {
				wantEq(t, "separator", c.Dialect.ScopeSeparator, " ")
				wantEq(t, "client auth", c.Dialect.ClientAuth, oauth2.AuthStyleInParams)
				wantEq(t, "lifetime fields (no duplicate)", fmt.Sprint(c.Dialect.LifetimeFields), "[expires_in token_expires_in]")
				wantEq(t, "preset header kept", c.Dialect.Headers["Accept"], "application/vnd.ingest.v1+json")
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := mustLoad(t, baseEnv(tc.env...))
			if len(c.Credentials) != 1 {
				t.Fatalf("got %d credentials, want 1", len(c.Credentials))
			}
			if len(c.Warnings) != 0 {
				t.Errorf("unexpected warnings: %q", c.Warnings)
			}
			tc.check(t, c.Credentials[0])
			if _, _, err := credential(c.Credentials[0], nil, slog.New(slog.DiscardHandler)); err != nil {
				t.Errorf("credential: %v", err)
			}
		})
	}
}

func wantEq[T comparable](t *testing.T, what string, got, want T) {
	t.Helper()
	if got != want {
		t.Errorf("%s = %v, want %v", what, got, want)
	}
}

// TestConfiguredCredentialsGetTokens runs each preset, as configured through
// the environment, against a local server as strict as the real provider.
func TestConfiguredCredentialsGetTokens(t *testing.T) {
	p := oauthtest.StartTest(t, oauthtest.Options{})
	const redirect = "https://app.example.com/cb"
	for _, tc := range []struct {
		name    string
		dialect oauthtest.Dialect
		client  oauthtest.Client
		refresh bool // give an issued refresh token
		env     []string
	}{
		{"firework cc", oauthtest.Firework, oauthtest.Client{ID: "fw-cc", Secret: "s1", Scopes: []string{"videos:read"}}, false,
			[]string{"PROVIDER=firework", "CLIENT_ID=fw-cc", "CLIENT_SECRET=s1", "SCOPES=videos:read"}},
		{"firework refresh", oauthtest.Firework, oauthtest.Client{ID: "fw-user", Secret: "s2", RedirectURI: redirect}, true,
			[]string{"PROVIDER=firework", "CLIENT_ID=fw-user", "CLIENT_SECRET=s2", "REDIRECT_URI=" + redirect}},
		{"livepush refresh", oauthtest.Livepush, oauthtest.Client{ID: "lp", Secret: "s3"}, true,
			[]string{"PROVIDER=livepush", "CLIENT_ID=lp", "CLIENT_SECRET=s3"}},
		{"ingest cc", oauthtest.Ingest, oauthtest.Client{ID: "in", Secret: "s4", Scopes: []string{"read_videos", "write_videos"}}, false,
			[]string{"PROVIDER=ingest", "CLIENT_ID=in", "CLIENT_SECRET=s4", "SCOPES=read_videos write_videos"}},
		{"vsrs password", oauthtest.VSRS, oauthtest.Client{ID: "vs", Secret: "s5"}, false,
			[]string{"PROVIDER=vsrs", "CLIENT_ID=vs", "CLIENT_SECRET=s5", "USERNAME=alice", "PASSWORD=alice-pw"}},
		{"generic cc", oauthtest.Generic, oauthtest.Client{ID: "gen", Secret: "s6"}, false,
			[]string{"CLIENT_ID=gen", "CLIENT_SECRET=s6", "CLIENT_AUTH=params"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.client.Dialect = tc.dialect
			p.AddClient(tc.client)
			p.AddUser("alice", "alice-pw")
			env := []string{"TOKENBROKER_CREDENTIALS=x", "TOKENBROKER_X_TOKEN_URL=" + p.TokenURL(tc.dialect)}
			if tc.refresh {
				env = append(env, "TOKENBROKER_X_REFRESH_TOKEN="+p.IssueRefreshToken(tc.client.ID))
			}
			for _, kv := range tc.env {
				env = append(env, "TOKENBROKER_X_"+kv)
			}
			c := mustLoad(t, baseEnv(env...))
			bc, _, err := credential(c.Credentials[0], &http.Client{Timeout: 10 * time.Second}, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			tok, err := bc.Source.Token(context.Background(), sources.Token{RefreshToken: bc.InitialRefreshToken})
			if err != nil {
				t.Fatalf("Token: %v", err)
			}
			if !p.Valid(tok.AccessToken.Reveal()) {
				t.Errorf("the provider does not accept the access token it issued")
			}
		})
	}
}

func TestLoadConfigErrors(t *testing.T) {
	ok := []string{"TOKENBROKER_CREDENTIALS=fw", "TOKENBROKER_FW_PROVIDER=firework", "TOKENBROKER_FW_CLIENT_ID=id", "TOKENBROKER_FW_CLIENT_SECRET=s"}
	with := func(kv ...string) []string { return append(slices.Clone(kv), ok...) } // the first entry wins
	for _, tc := range []struct {
		name string
		env  []string
		want []string // variables that must each be blamed
		text string   // a phrase some problem must contain
	}{
		{"no credentials", nil, []string{"TOKENBROKER_CREDENTIALS"}, "not set"},
		{"empty entry", []string{"TOKENBROKER_CREDENTIALS=a,,b"}, []string{"TOKENBROKER_CREDENTIALS"}, "entry 2 is empty"},
		{"upper-case name", []string{"TOKENBROKER_CREDENTIALS=FW"}, []string{"TOKENBROKER_CREDENTIALS"}, "use lower case: fw"},
		{"bad character", []string{"TOKENBROKER_CREDENTIALS=fw.prod"}, []string{"TOKENBROKER_CREDENTIALS"}, "a-z, 0-9"},
		{"space separated", []string{"TOKENBROKER_CREDENTIALS=a b"}, []string{"TOKENBROKER_CREDENTIALS"}, "separate names with commas"},
		{"too long", []string{"TOKENBROKER_CREDENTIALS=" + strings.Repeat("a", 65)}, []string{"TOKENBROKER_CREDENTIALS"}, "at most 64"},
		{"duplicate", with("TOKENBROKER_CREDENTIALS=fw, fw"), []string{"TOKENBROKER_CREDENTIALS"}, "listed twice"},
		{"names share variables", []string{"TOKENBROKER_CREDENTIALS=a-b,a_b"}, []string{"TOKENBROKER_CREDENTIALS"}, "TOKENBROKER_A_B_*"},
		{"relative socket", with("TOKENBROKER_SOCKET=tb.sock"), []string{"TOKENBROKER_SOCKET"}, "absolute"},
		{"long socket", with("TOKENBROKER_SOCKET=/" + strings.Repeat("s", 120)), []string{"TOKENBROKER_SOCKET"}, "bytes long"},
		{"relative state dir", with("TOKENBROKER_STATE_DIR=state"), []string{"TOKENBROKER_STATE_DIR"}, "absolute"},
		{"log level", with("TOKENBROKER_LOG_LEVEL=verbose"), []string{"TOKENBROKER_LOG_LEVEL"}, `"verbose"`},
		{"log format", with("TOKENBROKER_LOG_FORMAT=xml"), []string{"TOKENBROKER_LOG_FORMAT"}, "text or json"},
		{"refresh at not a number", with("TOKENBROKER_REFRESH_AT=most"), []string{"TOKENBROKER_REFRESH_AT"}, "not a number"},
		{"refresh at too high", with("TOKENBROKER_REFRESH_AT=0.99"), []string{"TOKENBROKER_REFRESH_AT"}, "0.5 to 0.95"},
		{"refresh at NaN", with("TOKENBROKER_REFRESH_AT=NaN"), []string{"TOKENBROKER_REFRESH_AT"}, "0.5 to 0.95"},
		{"timeout without unit", with("TOKENBROKER_REQUEST_TIMEOUT=30"), []string{"TOKENBROKER_REQUEST_TIMEOUT"}, "not a duration"},
		{"negative wait", with("TOKENBROKER_HANDOUT_WAIT=-1s"), []string{"TOKENBROKER_HANDOUT_WAIT"}, "outside"},
		{"backoff zero", with("TOKENBROKER_BACKOFF_MAX=0s"), []string{"TOKENBROKER_BACKOFF_MAX"}, "outside"},
		{"concurrency", with("TOKENBROKER_PROVIDER_CONCURRENCY=many"), []string{"TOKENBROKER_PROVIDER_CONCURRENCY"}, "whole number"},
		{"concurrency zero", with("TOKENBROKER_PROVIDER_CONCURRENCY=0"), []string{"TOKENBROKER_PROVIDER_CONCURRENCY"}, "outside"},
		{"upstream in clear", with("TOKENBROKER_FW_UPSTREAM=http://api.example.com"), []string{"TOKENBROKER_FW_UPSTREAM"}, "in clear"},
		{"upstream with a query", with("TOKENBROKER_FW_UPSTREAM=https://api.example.com/?k=v"), []string{"TOKENBROKER_FW_UPSTREAM"}, "query"},
		{"upstream timeout", with("TOKENBROKER_FW_UPSTREAM_TIMEOUT=0s"), []string{"TOKENBROKER_FW_UPSTREAM_TIMEOUT"}, "outside"},
		{"unknown setting", with("TOKENBROKER_FW_CLIENTSECRET=x"), []string{"TOKENBROKER_FW_CLIENTSECRET"}, "did you mean TOKENBROKER_FW_CLIENT_SECRET?"},
		{"lower-case setting", with("TOKENBROKER_FW_scopes=x"), []string{"TOKENBROKER_FW_scopes"}, "did you mean TOKENBROKER_FW_SCOPES?"},
		{"file for a plain setting", with("TOKENBROKER_FW_CLIENT_ID_FILE=/x"), []string{"TOKENBROKER_FW_CLIENT_ID_FILE"}, "can be read from a file"},
		{"unknown provider", []string{"TOKENBROKER_CREDENTIALS=fw", "TOKENBROKER_FW_PROVIDER=fireworks", "TOKENBROKER_FW_CLIENT_ID=id", "TOKENBROKER_FW_CLIENT_SECRET=s"},
			[]string{"TOKENBROKER_FW_PROVIDER"}, "not a known provider"},
		{"grant not offered", with("TOKENBROKER_FW_GRANT=password", "TOKENBROKER_FW_USERNAME=u", "TOKENBROKER_FW_PASSWORD=p"),
			[]string{"TOKENBROKER_FW_GRANT"}, "does not offer the password grant"},
		{"inferred grant not offered", with("TOKENBROKER_FW_USERNAME=u", "TOKENBROKER_FW_PASSWORD=p"),
			[]string{"TOKENBROKER_FW_GRANT"}, "because USERNAME is set"},
		{"unknown grant", with("TOKENBROKER_FW_GRANT=implicit"), []string{"TOKENBROKER_FW_GRANT"}, "not a grant"},
		{"socket mode not octal", with("TOKENBROKER_SOCKET_MODE=rw-rw----"), []string{"TOKENBROKER_SOCKET_MODE"}, "not an octal mode"},
		{"socket mode with exec bits", with("TOKENBROKER_SOCKET_MODE=0770"), []string{"TOKENBROKER_SOCKET_MODE"}, "beyond read and write"},
		{"socket mode locks out the broker", with("TOKENBROKER_SOCKET_MODE=0060"), []string{"TOKENBROKER_SOCKET_MODE"}, "broker's own user"},
		{"unknown socket group", with("TOKENBROKER_SOCKET_GROUP=no-such-group-xyz"), []string{"TOKENBROKER_SOCKET_GROUP"}, "known group"},
		{"root socket group", with("TOKENBROKER_SOCKET_GROUP=0"), []string{"TOKENBROKER_SOCKET_GROUP"}, "root's group"},
		{"unknown allowed user", with("TOKENBROKER_ALLOW_UIDS=1000,no-such-user-xyz"), []string{"TOKENBROKER_ALLOW_UIDS"}, "known user"},
		{"unknown allowed group of a credential", with("TOKENBROKER_FW_ALLOW_GIDS=no-such-group-xyz"), []string{"TOKENBROKER_FW_ALLOW_GIDS"}, "known group"},
		{"metrics address", with("TOKENBROKER_METRICS_ADDR=9464"), []string{"TOKENBROKER_METRICS_ADDR"}, "not host:port"},
		{"per-credential metrics", with("TOKENBROKER_METRICS_PER_CREDENTIAL=maybe"), []string{"TOKENBROKER_METRICS_PER_CREDENTIAL"}, "true or false"},
		{"answer timeout shorter than the request timeout", with("TOKENBROKER_REQUEST_TIMEOUT=1m", "TOKENBROKER_ANSWER_TIMEOUT=30s"), []string{"TOKENBROKER_ANSWER_TIMEOUT"}, "shorter than TOKENBROKER_REQUEST_TIMEOUT"},
		{"probe interval", with("TOKENBROKER_PROBE_INTERVAL=10ms"), []string{"TOKENBROKER_PROBE_INTERVAL"}, ""},
		{"lock lease", with("TOKENBROKER_REDIS_LOCK_TTL=10ms"), []string{"TOKENBROKER_REDIS_LOCK_TTL"}, ""},
		{"previous secret alone", []string{"TOKENBROKER_CREDENTIALS=fw", "TOKENBROKER_FW_PROVIDER=firework", "TOKENBROKER_FW_CLIENT_ID=id",
			"TOKENBROKER_FW_CLIENT_SECRET_PREVIOUS=old"}, []string{"TOKENBROKER_FW_CLIENT_SECRET_PREVIOUS"}, "set the current one too"},
		{"authorize URL", with("TOKENBROKER_FW_AUTHORIZE_URL=not a url"), []string{"TOKENBROKER_FW_AUTHORIZE_URL"}, ""},
		{"authorization_code grant", with("TOKENBROKER_FW_GRANT=authorization_code"), []string{"TOKENBROKER_FW_GRANT"}, "tokenbroker authorize fw"},
		{"ambiguous grant", []string{"TOKENBROKER_CREDENTIALS=v", "TOKENBROKER_V_PROVIDER=vsrs", "TOKENBROKER_V_TOKEN_URL=https://v/t", "TOKENBROKER_V_CLIENT_ID=id",
			"TOKENBROKER_V_REFRESH_TOKEN=r", "TOKENBROKER_V_USERNAME=u"}, []string{"TOKENBROKER_V_GRANT"}, "both REFRESH_TOKEN and USERNAME"},
		{"no client id", []string{"TOKENBROKER_CREDENTIALS=fw", "TOKENBROKER_FW_PROVIDER=firework", "TOKENBROKER_FW_CLIENT_SECRET=s"},
			[]string{"TOKENBROKER_FW_CLIENT_ID"}, "required"},
		{"no client secret for cc", []string{"TOKENBROKER_CREDENTIALS=fw", "TOKENBROKER_FW_PROVIDER=firework", "TOKENBROKER_FW_CLIENT_ID=id"},
			[]string{"TOKENBROKER_FW_CLIENT_SECRET"}, "required for the client_credentials grant"},
		{"firework refresh without redirect", with("TOKENBROKER_FW_REFRESH_TOKEN=r"), []string{"TOKENBROKER_FW_REDIRECT_URI"}, "sends redirect_uri on every refresh"},
		{"password grant without password", []string{"TOKENBROKER_CREDENTIALS=v", "TOKENBROKER_V_PROVIDER=vsrs", "TOKENBROKER_V_TOKEN_URL=https://v/t",
			"TOKENBROKER_V_CLIENT_ID=id", "TOKENBROKER_V_CLIENT_SECRET=s", "TOKENBROKER_V_USERNAME=u"}, []string{"TOKENBROKER_V_PASSWORD"}, "required for the password grant"},
		{"password grant without username", []string{"TOKENBROKER_CREDENTIALS=v", "TOKENBROKER_V_PROVIDER=vsrs", "TOKENBROKER_V_TOKEN_URL=https://v/t",
			"TOKENBROKER_V_GRANT=password", "TOKENBROKER_V_CLIENT_ID=id", "TOKENBROKER_V_CLIENT_SECRET=s", "TOKENBROKER_V_PASSWORD=p"},
			[]string{"TOKENBROKER_V_USERNAME"}, "required for the password grant"},
		{"password without username", with("TOKENBROKER_FW_PASSWORD=p"), []string{"TOKENBROKER_FW_PASSWORD"}, "does not use it"},
		{"refresh token with cc grant", with("TOKENBROKER_FW_GRANT=client_credentials", "TOKENBROKER_FW_REFRESH_TOKEN=r"),
			[]string{"TOKENBROKER_FW_REFRESH_TOKEN"}, "does not use it"},
		{"vsrs without token URL", []string{"TOKENBROKER_CREDENTIALS=v", "TOKENBROKER_V_PROVIDER=vsrs", "TOKENBROKER_V_CLIENT_ID=id",
			"TOKENBROKER_V_CLIENT_SECRET=s", "TOKENBROKER_V_USERNAME=u", "TOKENBROKER_V_PASSWORD=p"}, []string{"TOKENBROKER_V_TOKEN_URL"}, "required"},
		{"generic without token URL", []string{"TOKENBROKER_CREDENTIALS=g", "TOKENBROKER_G_CLIENT_ID=id", "TOKENBROKER_G_CLIENT_SECRET=s"},
			[]string{"TOKENBROKER_G_TOKEN_URL"}, "required"},
		{"token URL not http", with("TOKENBROKER_FW_TOKEN_URL=ftp://a/token"), []string{"TOKENBROKER_FW_TOKEN_URL"}, "not an http(s) URL"},
		{"token URL relative", with("TOKENBROKER_FW_TOKEN_URL=/oauth/token"), []string{"TOKENBROKER_FW_TOKEN_URL"}, "not an http(s) URL"},
		{"token URL with password", with("TOKENBROKER_FW_TOKEN_URL=https://u:hunter2@a/token"), []string{"TOKENBROKER_FW_TOKEN_URL"}, "user name or password"},
		{"bad redirect", with("TOKENBROKER_FW_REDIRECT_URI=/cb"), []string{"TOKENBROKER_FW_REDIRECT_URI"}, "absolute URI"},
		{"bad scope", with(`TOKENBROKER_FW_SCOPES=a "b"`), []string{"TOKENBROKER_FW_SCOPES"}, "RFC 6749"},
		{"method", with("TOKENBROKER_FW_METHOD=PUT"), []string{"TOKENBROKER_FW_METHOD"}, "GET or POST"},
		{"params", with("TOKENBROKER_FW_PARAMS=header"), []string{"TOKENBROKER_FW_PARAMS"}, "body or query"},
		{"GET with body", with("TOKENBROKER_FW_METHOD=GET", "TOKENBROKER_FW_PARAMS=body"), []string{"TOKENBROKER_FW_PARAMS"}, "GET"},
		{"client auth", with("TOKENBROKER_FW_CLIENT_AUTH=jwt"), []string{"TOKENBROKER_FW_CLIENT_AUTH"}, "basic or params"},
		{"scope separator", with("TOKENBROKER_FW_SCOPE_SEPARATOR=;"), []string{"TOKENBROKER_FW_SCOPE_SEPARATOR"}, "space or comma"},
		{"header syntax", with("TOKENBROKER_FW_HEADERS=X-A=1"), []string{"TOKENBROKER_FW_HEADERS"}, "Name: value"},
		{"header name", with("TOKENBROKER_FW_HEADERS=X A: 1"), []string{"TOKENBROKER_FW_HEADERS"}, "header name"},
		{"authorization header", with("TOKENBROKER_FW_HEADERS=authorization: Bearer x"), []string{"TOKENBROKER_FW_HEADERS"}, "Authorization cannot be set"},
		{"lifetime field", with("TOKENBROKER_FW_LIFETIME_FIELD=expires in"), []string{"TOKENBROKER_FW_LIFETIME_FIELD"}, "JSON field"},
		{"bool", with("TOKENBROKER_FW_REFRESH_SENDS_SECRET=sometimes"), []string{"TOKENBROKER_FW_REFRESH_SENDS_SECRET"}, "true or false"},
		{"default lifetime", with("TOKENBROKER_FW_DEFAULT_LIFETIME=1 hour"), []string{"TOKENBROKER_FW_DEFAULT_LIFETIME"}, "not a duration"},
		{"default lifetime too long", with("TOKENBROKER_FW_DEFAULT_LIFETIME=720h"), []string{"TOKENBROKER_FW_DEFAULT_LIFETIME"}, "outside"},
		{"control character in client id", with("TOKENBROKER_FW_CLIENT_ID=a\x1bb"), []string{"TOKENBROKER_FW_CLIENT_ID"}, "control character"},
		{"line inside secret", []string{"TOKENBROKER_CREDENTIALS=fw", "TOKENBROKER_FW_PROVIDER=firework", "TOKENBROKER_FW_CLIENT_ID=id",
			"TOKENBROKER_FW_CLIENT_SECRET=a\nb"}, []string{"TOKENBROKER_FW_CLIENT_SECRET"}, "line break"},
		{"setting of two credentials", []string{"TOKENBROKER_CREDENTIALS=x,x_refresh_sends", "TOKENBROKER_X_REFRESH_SENDS_REDIRECT_URI=true"},
			[]string{"TOKENBROKER_X_REFRESH_SENDS_REDIRECT_URI"}, "both credentials x and x_refresh_sends"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := loadConfig(baseEnv(tc.env...))
			if err == nil {
				t.Fatalf("loadConfig succeeded; want a problem with %v", tc.want)
			}
			lines := errorLines(t, err)
			for _, v := range tc.want {
				if !blames(lines, v) {
					t.Errorf("no problem names %s; got:\n%v", v, err)
				}
			}
			if !strings.Contains(err.Error(), tc.text) {
				t.Errorf("no problem says %q; got:\n%v", tc.text, err)
			}
		})
	}
}

// TestLoadConfigReportsEveryProblem: five mistakes, five lines, at once.
func TestLoadConfigReportsEveryProblem(t *testing.T) {
	_, err := loadConfig(baseEnv(
		"TOKENBROKER_CREDENTIALS=fw,ingest",
		"TOKENBROKER_REFRESH_AT=2",                  // 1
		"TOKENBROKER_REQUEST_TIMEOUT=soon",          // 2
		"TOKENBROKER_FW_PROVIDER=firework",          //
		"TOKENBROKER_FW_CLIENT_SECRET=s",            // 3: no CLIENT_ID
		"TOKENBROKER_FW_CLIENTID=id",                // 4: unknown setting
		"TOKENBROKER_INGEST_PROVIDER=ingest",        //
		"TOKENBROKER_INGEST_CLIENT_ID=id",           //
		"TOKENBROKER_INGEST_CLIENT_SECRET=s",        //
		"TOKENBROKER_INGEST_DEFAULT_LIFETIME=1year", // 5
	))
	want := []string{
		"TOKENBROKER_REFRESH_AT", "TOKENBROKER_REQUEST_TIMEOUT", "TOKENBROKER_FW_CLIENT_ID",
		"TOKENBROKER_FW_CLIENTID", "TOKENBROKER_INGEST_DEFAULT_LIFETIME",
	}
	lines := errorLines(t, err)
	if len(lines) != len(want) {
		t.Errorf("got %d problems, want %d:\n%v", len(lines), len(want), err)
	}
	for _, v := range want {
		if !blames(lines, v) {
			t.Errorf("no problem names %s; got:\n%v", v, err)
		}
	}
}

func TestSecretFiles(t *testing.T) {
	dir := t.TempDir()
	good := secretFile(t, "file-secret\r\n", 0o600)
	readOnly := secretFile(t, "file-secret", 0o400)
	for _, tc := range []struct {
		name    string
		env     []string
		wantVar string // "" for success
		text    string
	}{
		{"good", []string{"TOKENBROKER_A_CLIENT_SECRET_FILE=" + good}, "", ""},
		{"read-only", []string{"TOKENBROKER_A_CLIENT_SECRET_FILE=" + readOnly}, "", ""},
		{"group-readable, as a Kubernetes secret with fsGroup", []string{"TOKENBROKER_A_CLIENT_SECRET_FILE=" + secretFile(t, "file-secret", 0o440)}, "", ""},
		{"missing", []string{"TOKENBROKER_A_CLIENT_SECRET_FILE=" + filepath.Join(dir, "nope")},
			"TOKENBROKER_A_CLIENT_SECRET_FILE", "does not exist"},
		{"empty", []string{"TOKENBROKER_A_CLIENT_SECRET_FILE=" + secretFile(t, "\n", 0o600)},
			"TOKENBROKER_A_CLIENT_SECRET_FILE", "is empty"},
		{"mode 0644", []string{"TOKENBROKER_A_CLIENT_SECRET_FILE=" + secretFile(t, "x", 0o644)},
			"TOKENBROKER_A_CLIENT_SECRET_FILE", "is readable by every user (mode 0644); chmod 600"},
		{"group writable", []string{"TOKENBROKER_A_CLIENT_SECRET_FILE=" + secretFile(t, "x", 0o620)},
			"TOKENBROKER_A_CLIENT_SECRET_FILE", "is writable by other users"},
		{"both set", []string{"TOKENBROKER_A_CLIENT_SECRET=x", "TOKENBROKER_A_CLIENT_SECRET_FILE=" + good},
			"TOKENBROKER_A_CLIENT_SECRET", "set only one"},
		{"directory", []string{"TOKENBROKER_A_CLIENT_SECRET_FILE=" + dir}, "TOKENBROKER_A_CLIENT_SECRET_FILE", "not a regular file"},
		{"two lines", []string{"TOKENBROKER_A_CLIENT_SECRET_FILE=" + secretFile(t, "a\nb\n", 0o600)},
			"TOKENBROKER_A_CLIENT_SECRET_FILE", "more than one line"},
		{"relative path, maybe a pasted secret", []string{"TOKENBROKER_A_CLIENT_SECRET_FILE=pasted-SECRET-value"},
			"TOKENBROKER_A_CLIENT_SECRET_FILE", "not an absolute path"},
		{"refresh token file missing", []string{"TOKENBROKER_A_CLIENT_SECRET=x", "TOKENBROKER_A_REFRESH_TOKEN_FILE=" + filepath.Join(dir, "rt")},
			"TOKENBROKER_A_REFRESH_TOKEN_FILE", "does not exist"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := append([]string{"TOKENBROKER_CREDENTIALS=a", "TOKENBROKER_A_CLIENT_ID=id",
				"TOKENBROKER_A_TOKEN_URL=https://auth.example.com/token"}, tc.env...)
			c, err := loadConfig(baseEnv(env...))
			if tc.wantVar == "" {
				if err != nil {
					t.Fatalf("unexpected error:\n%v", err)
				}
				wantEq(t, "secret", c.Credentials[0].Client.Secret.Reveal(), "file-secret")
				return
			}
			lines := errorLines(t, err)
			if !blames(lines, tc.wantVar) || !strings.Contains(err.Error(), tc.text) {
				t.Errorf("want a problem naming %s saying %q; got:\n%v", tc.wantVar, tc.text, err)
			}
			if len(lines) != 1 {
				t.Errorf("want exactly one problem (no \"required\" echo); got:\n%v", err)
			}
			if strings.Contains(err.Error(), "pasted-SECRET-value") {
				t.Errorf("the error echoes a _FILE value that may be a secret:\n%v", err)
			}
		})
	}
	t.Run("unreadable", func(t *testing.T) {
		if os.Geteuid() == 0 {
			t.Skip("root reads every file")
		}
		path := secretFile(t, "x", 0o000)
		_, err := loadConfig(baseEnv("TOKENBROKER_CREDENTIALS=a", "TOKENBROKER_A_CLIENT_ID=id",
			"TOKENBROKER_A_TOKEN_URL=https://auth.example.com/token", "TOKENBROKER_A_CLIENT_SECRET_FILE="+path))
		if !blames(errorLines(t, err), "TOKENBROKER_A_CLIENT_SECRET_FILE") || !strings.Contains(fmt.Sprint(err), "cannot be read") {
			t.Errorf("want a problem saying the file cannot be read; got:\n%v", err)
		}
	})
}

func TestLoadConfigWarnings(t *testing.T) {
	ok := []string{"TOKENBROKER_CREDENTIALS=fw-main", "TOKENBROKER_FW_MAIN_PROVIDER=firework", "TOKENBROKER_FW_MAIN_CLIENT_ID=id",
		"TOKENBROKER_FW_MAIN_CLIENT_SECRET=s"}
	for _, tc := range []struct {
		name  string
		env   []string
		want  string // a warning must start with this variable ...
		text  string // ... and say this
		count int
	}{
		{"unlisted credential", []string{"TOKENBROKER_FW_MAN_CLIENT_ID=id"}, "TOKENBROKER_FW_MAN_CLIENT_ID",
			"credential fw_man is not in TOKENBROKER_CREDENTIALS", 1},
		{"unlisted credential suggestion", []string{"TOKENBROKER_FW_MAN_SCOPES=a"}, "TOKENBROKER_FW_MAN_SCOPES",
			"did you mean TOKENBROKER_FW_MAIN_SCOPES, for fw-main?", 1},
		{"two variables of an unlisted credential", []string{"TOKENBROKER_OTHER_CLIENT_ID=id", "TOKENBROKER_OTHER_PROVIDER=ingest"},
			"TOKENBROKER_OTHER_CLIENT_ID", "credential other", 2},
		{"unknown global", []string{"TOKENBROKER_LOGLEVEL=debug"}, "TOKENBROKER_LOGLEVEL", "did you mean TOKENBROKER_LOG_LEVEL?", 1},
		{"http token URL", []string{"TOKENBROKER_FW_MAIN_TOKEN_URL=http://auth.example.com/token"}, "TOKENBROKER_FW_MAIN_TOKEN_URL",
			"in clear; use https://", 1},
		{"refresh knob without refresh grant", []string{"TOKENBROKER_FW_MAIN_REFRESH_SENDS_SECRET=true"}, "TOKENBROKER_FW_MAIN_REFRESH_SENDS_SECRET",
			"no effect", 1},
		{"refresh grant waiting for authorize", []string{"TOKENBROKER_FW_MAIN_GRANT=refresh_token", "TOKENBROKER_FW_MAIN_REDIRECT_URI=https://a/cb"},
			"TOKENBROKER_FW_MAIN_REFRESH_TOKEN", "until tokenbroker authorize fw-main stores one", 1},
		{"world-readable socket", []string{"TOKENBROKER_SOCKET_MODE=0666"}, "TOKENBROKER_SOCKET_MODE", "every local user", 1},
		{"metrics on every interface", []string{"TOKENBROKER_METRICS_ADDR=:9464"}, "TOKENBROKER_METRICS_ADDR", "every interface", 1},
		{"http to loopback is fine", []string{"TOKENBROKER_FW_MAIN_TOKEN_URL=http://127.0.0.1:8080/token"}, "", "", 0},
		{"http to localhost is fine", []string{"TOKENBROKER_FW_MAIN_TOKEN_URL=http://localhost/token"}, "", "", 0},
		{"other programs' variables are not ours", []string{"TOKENBROKERX=1", "HOME=/root"}, "", "", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := mustLoad(t, baseEnv(append(slices.Clone(ok), tc.env...)...))
			if len(c.Warnings) != tc.count {
				t.Errorf("got %d warnings, want %d: %q", len(c.Warnings), tc.count, c.Warnings)
			}
			if tc.want != "" && !slices.ContainsFunc(c.Warnings, func(w string) bool {
				return strings.HasPrefix(w, tc.want+": ") && strings.Contains(w, tc.text)
			}) {
				t.Errorf("no warning names %s saying %q; got %q", tc.want, tc.text, c.Warnings)
			}
		})
	}
	t.Run("warnings survive errors", func(t *testing.T) {
		c, err := loadConfig(baseEnv("TOKENBROKER_CREDENTIALS=a", "TOKENBROKER_B_CLIENT_ID=x"))
		if err == nil || len(c.Warnings) != 1 {
			t.Errorf("want an error and one warning; got %v, %q", err, c.Warnings)
		}
	})
}

// TestCheckShowsNoSecret: distinctive secret values appear nowhere in check
// output, errors or a printed Config; where each came from does.
func TestCheckShowsNoSecret(t *testing.T) {
	const (
		cs  = "cs-VALUE-must-not-leak-1"
		rt  = "rt-VALUE-must-not-leak-2"
		pw  = "pw-VALUE-must-not-leak-3"
		cs2 = "cs-VALUE-must-not-leak-4"
	)
	pwPath := secretFile(t, pw+"\n", 0o600)
	c := mustLoad(t, baseEnv(
		"TOKENBROKER_CREDENTIALS=fw-user,vsrs,ingest",
		"TOKENBROKER_FW_USER_PROVIDER=firework", "TOKENBROKER_FW_USER_CLIENT_ID=fw-id", "TOKENBROKER_FW_USER_CLIENT_SECRET="+cs,
		"TOKENBROKER_FW_USER_REFRESH_TOKEN="+rt, "TOKENBROKER_FW_USER_REDIRECT_URI=https://app.example.com/cb",
		"TOKENBROKER_VSRS_PROVIDER=vsrs", "TOKENBROKER_VSRS_TOKEN_URL=https://vsrs.internal/token", "TOKENBROKER_VSRS_CLIENT_ID=v-id",
		"TOKENBROKER_VSRS_CLIENT_SECRET="+cs2, "TOKENBROKER_VSRS_USERNAME=alice", "TOKENBROKER_VSRS_PASSWORD_FILE="+pwPath,
		"TOKENBROKER_INGEST_PROVIDER=ingest", "TOKENBROKER_INGEST_CLIENT_ID=in-id", "TOKENBROKER_INGEST_CLIENT_SECRET="+cs,
		"TOKENBROKER_INGEST_SCOPES=read_videos,write_videos",
	))
	var b bytes.Buffer
	config.WriteCheck(&b, c)
	out := b.String()
	for _, printed := range []string{out, fmt.Sprintf("%v %+v %#v", c, c, c)} {
		for _, s := range []string{cs, rt, pw, cs2} {
			if strings.Contains(printed, s) {
				t.Errorf("output shows secret %q:\n%s", s, printed)
			}
		}
	}
	for _, want := range []string{
		"[redacted] from TOKENBROKER_FW_USER_CLIENT_SECRET",
		"[redacted] from TOKENBROKER_FW_USER_REFRESH_TOKEN",
		"[redacted] from file " + pwPath + " (TOKENBROKER_VSRS_PASSWORD_FILE)",
		"credential ingest", "comma", "Accept: application/vnd.ingest.v1+json", "basic (HTTP Basic)",
		"query", "refresh sends secret", "level info",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("check output lacks %q:\n%s", want, out)
		}
	}
}

func TestFingerprint(t *testing.T) {
	base := []string{"TOKENBROKER_CREDENTIALS=a", "TOKENBROKER_A_TOKEN_URL=https://auth.example.com/token",
		"TOKENBROKER_A_CLIENT_ID=id", "TOKENBROKER_A_CLIENT_SECRET=secret-one"}
	fp := func(kv ...string) string {
		t.Helper()
		c := mustLoad(t, baseEnv(append(slices.Clone(kv), base...)...))
		bc, _, err := credential(c.Credentials[0], nil, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(bc.Fingerprint, "secret-") {
			t.Errorf("fingerprint %q holds the secret", bc.Fingerprint)
		}
		return bc.Fingerprint
	}
	a := fp("TOKENBROKER_A_SCOPES=b a")
	if b := fp("TOKENBROKER_A_SCOPES=a,b"); a != b {
		t.Errorf("scope order changes the fingerprint: %q vs %q", a, b)
	}
	if b := fp("TOKENBROKER_A_SCOPES=b a", "TOKENBROKER_A_CLIENT_SECRET=secret-two", "TOKENBROKER_A_CLIENT_AUTH=params"); a != b {
		t.Errorf("secret or dialect changes the fingerprint: %q vs %q", a, b)
	}
	for _, kv := range []string{"TOKENBROKER_A_SCOPES=a", "TOKENBROKER_A_CLIENT_ID=other", "TOKENBROKER_A_TOKEN_URL=https://auth.example.com/t2"} {
		if b := fp(kv, "TOKENBROKER_A_SCOPES=b a"); a == b {
			t.Errorf("%s does not change the fingerprint %q", kv, a)
		}
	}
}

// FuzzLoadConfig: whatever the values, loadConfig does not panic, and no
// secret value reaches an error, a warning or check output.
func FuzzLoadConfig(f *testing.F) {
	f.Add("fw", "firework", "", "", "videos:read", "", "", "s3cr3t", uint8(1))
	f.Add("fw,x", "vsrs", "password", "https://a/t", "a b", "X: y", "1h", "pw", uint8(15))
	f.Add("fw", "generic", "refresh_token", "http://u:p@host/t", "", "", "", "rt\n", uint8(2))
	f.Add("FW ,, fw", "livepush", "authorization_code", "%zz", "\"", ";:;", "-1s", "", uint8(6))
	f.Fuzz(func(t *testing.T, names, provider, grant, tokenURL, scopes, headers, lifetime, secret string, which uint8) {
		// The secret is marked so that it cannot be confused with text
		// loadConfig writes itself; other inputs cannot hold the mark.
		const mark = "QZXQ"
		unmark := func(s string) string {
			for strings.Contains(s, mark) {
				s = strings.ReplaceAll(s, mark, "")
			}
			return s
		}
		secretValue := mark + unmark(secret) + mark
		env := []string{
			"TOKENBROKER_CREDENTIALS=" + unmark(names),
			"TOKENBROKER_FW_PROVIDER=" + unmark(provider),
			"TOKENBROKER_FW_GRANT=" + unmark(grant),
			"TOKENBROKER_FW_TOKEN_URL=" + unmark(tokenURL),
			"TOKENBROKER_FW_SCOPES=" + unmark(scopes),
			"TOKENBROKER_FW_HEADERS=" + unmark(headers),
			"TOKENBROKER_FW_DEFAULT_LIFETIME=" + unmark(lifetime),
			"TOKENBROKER_FW_CLIENT_ID=id",
			"TOKENBROKER_X_CLIENT_SECRET=" + secretValue, // a credential that may not be listed
		}
		// which picks the secrets and the user, so that some inputs load.
		for i, kv := range []string{
			"TOKENBROKER_FW_CLIENT_SECRET=" + secretValue,
			"TOKENBROKER_FW_REFRESH_TOKEN=" + secretValue + "r",
			"TOKENBROKER_FW_PASSWORD=" + secretValue + "p",
			"TOKENBROKER_FW_USERNAME=u",
			"TOKENBROKER_FW_REDIRECT_URI=https://app.example.com/cb",
		} {
			if which&(1<<i) != 0 {
				env = append(env, kv)
			}
		}
		c, err := loadConfig(baseEnv(env...))
		var b bytes.Buffer
		if err != nil {
			b.WriteString(err.Error())
		} else {
			config.WriteCheck(&b, c)
			for _, cc := range c.Credentials {
				bc, _, err := credential(cc, nil, slog.New(slog.DiscardHandler))
				if err != nil {
					t.Fatalf("a loaded credential cannot be built: %v", err)
				}
				b.WriteString(bc.Fingerprint)
			}
		}
		b.WriteString(strings.Join(c.Warnings, "\n"))
		if strings.Contains(b.String(), mark) {
			t.Fatalf("a secret value leaked:\n%s", b.String())
		}
	})
}

// TestFailedSecretFileStillPicksGrant: a broken REFRESH_TOKEN_FILE is one
// problem, not a cascade about the client_credentials grant it did not mean.
func TestFailedSecretFileStillPicksGrant(t *testing.T) {
	_, err := loadConfig(baseEnv("TOKENBROKER_CREDENTIALS=lp", "TOKENBROKER_LP_PROVIDER=livepush", "TOKENBROKER_LP_CLIENT_ID=id",
		"TOKENBROKER_LP_REFRESH_TOKEN_FILE="+filepath.Join(t.TempDir(), "missing")))
	lines := errorLines(t, err)
	if len(lines) != 1 || !blames(lines, "TOKENBROKER_LP_REFRESH_TOKEN_FILE") {
		t.Errorf("want one problem, about TOKENBROKER_LP_REFRESH_TOKEN_FILE; got:\n%v", err)
	}
}
