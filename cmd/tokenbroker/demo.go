package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/tokenbroker/tokenbroker/cmd/tokenbroker/internal/config"
	"github.com/tokenbroker/tokenbroker/sources/oauthtest"
)

// demoLifetime is short so that a newcomer sees proactive refreshes within
// a minute.
const demoLifetime = 30 * time.Second

// demoCmd runs the daemon against an embedded local provider that speaks
// every dialect, configured through the same environment variables an
// operator would set.
func demoCmd(stdout, stderr io.Writer) int {
	p, err := oauthtest.Start(oauthtest.Options{AccessLifetime: demoLifetime, Rotate: true})
	if err != nil {
		fmt.Fprintln(stderr, "tokenbroker demo: starting the local provider:", err)
		return exitFail
	}
	defer p.Close()
	dir, err := os.MkdirTemp("", "tokenbroker-demo-")
	if err != nil {
		fmt.Fprintln(stderr, "tokenbroker demo:", err)
		return exitFail
	}
	defer os.RemoveAll(dir)

	if err := setEnviron(withAwaitingCredential(demoEnviron(p, dir), p)); err != nil {
		fmt.Fprintln(stderr, "tokenbroker demo:", err)
		return exitFail
	}
	cfg, err := config.Load()
	if err != nil {
		printConfigErrors(stderr, err)
		return exitFail
	}
	cfg.LogFormat = "text"
	log := newLogger(cfg, stderr)

	ctx, stop := signalContext(stderr)
	defer stop()
	sock := cfg.Socket
	ready := func() {
		fmt.Fprintf(stdout, `
tokenbroker demo: a local provider speaking every dialect issues %s tokens;
the broker refreshes each one before 85%% of its life has passed.

Try, in another terminal:
  curl -s -H 'X-Tokenbroker: 1' --unix-socket %s http://tokenbroker/v1/tokens/firework
  curl -s -H 'X-Tokenbroker: 1' --unix-socket %s http://tokenbroker/v1/credentials
  TOKENBROKER_SOCKET=%s go run ./cmd/tokenbroker status

%s has no token yet: authorize it (the demo provider approves at once; open
the URL it prints in a browser on this host, or fetch it with curl -L):
  TOKENBROKER_SOCKET=%s go run ./cmd/tokenbroker authorize %s

Credentials: %s. Stop with Ctrl-C.

`, demoLifetime, sock, sock, sock, demoAwaiting, sock, demoAwaiting, strings.Join(credNames(cfg), ", "))
	}
	env := os.Environ() // the demo's own, not the one it started with
	if err := serve(ctx, cfg, func() []string { return env }, log, ready); err != nil {
		log.Error("demo stopped", "err", err)
		return exitFail
	}
	return exitOK
}

func credNames(cfg Config) []string {
	var names []string
	for _, c := range cfg.Credentials {
		names = append(names, c.Name)
	}
	return names
}

// demoEnviron registers one client per dialect at p and returns the
// environment that configures the broker for them.
func demoEnviron(p *oauthtest.Provider, dir string) []string {
	env := []string{
		"TOKENBROKER_SOCKET=" + filepath.Join(dir, "tokenbroker.sock"),
		"TOKENBROKER_STATE_DIR=" + filepath.Join(dir, "state"),
		"TOKENBROKER_CREDENTIALS=firework, firework-user, livepush, ingest, vsrs",
	}
	add := func(name string, kv ...string) {
		up := "TOKENBROKER_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_")) + "_"
		for i := 0; i < len(kv); i += 2 {
			env = append(env, up+kv[i]+"="+kv[i+1])
		}
	}
	const redirect = "http://127.0.0.1/callback"
	reg := func(id string, d oauthtest.Dialect, scopes ...string) string {
		p.AddClient(oauthtest.Client{ID: id, Secret: "demo-secret-" + id, Scopes: scopes, RedirectURI: redirect, Dialect: d})
		return "demo-secret-" + id
	}

	add("firework", "PROVIDER", "firework", "GRANT", "client_credentials", "TOKEN_URL", p.TokenURL(oauthtest.Firework),
		"CLIENT_ID", "fw-app", "CLIENT_SECRET", reg("fw-app", oauthtest.Firework, "videos:write", "livestreams:read"),
		"SCOPES", "videos:write livestreams:read")
	reg("fw-user", oauthtest.Firework)
	add("firework-user", "PROVIDER", "firework", "GRANT", "refresh_token", "TOKEN_URL", p.TokenURL(oauthtest.Firework),
		"CLIENT_ID", "fw-user", "REDIRECT_URI", redirect, "REFRESH_TOKEN", p.IssueRefreshToken("fw-user"))
	add("livepush", "PROVIDER", "livepush", "GRANT", "refresh_token", "TOKEN_URL", p.TokenURL(oauthtest.Livepush),
		"CLIENT_ID", "lp", "CLIENT_SECRET", reg("lp", oauthtest.Livepush, "streams.read"), "REFRESH_TOKEN", p.IssueRefreshToken("lp"))
	add("ingest", "PROVIDER", "ingest", "GRANT", "client_credentials", "TOKEN_URL", p.TokenURL(oauthtest.Ingest),
		"CLIENT_ID", "ing", "CLIENT_SECRET", reg("ing", oauthtest.Ingest, "read_videos", "write_videos"), "SCOPES", "read_videos,write_videos")
	p.AddUser("demo", "demo-password")
	add("vsrs", "PROVIDER", "vsrs", "GRANT", "password", "TOKEN_URL", p.TokenURL(oauthtest.VSRS),
		"CLIENT_ID", "vs", "CLIENT_SECRET", reg("vs", oauthtest.VSRS), "USERNAME", "demo", "PASSWORD", "demo-password")
	return env
}

// demoAwaiting is the demo's user credential without a token, to try
// tokenbroker authorize on; its redirect URI is a loopback port.
const (
	demoAwaiting = "livepush-new"
	demoRedirect = "http://127.0.0.1:8976/callback"
)

// withAwaitingCredential adds demoAwaiting to a demo environment.
func withAwaitingCredential(env []string, p *oauthtest.Provider) []string {
	p.AddClient(oauthtest.Client{ID: "lp-new", Secret: "demo-secret-lp-new", Scopes: []string{"streams.read"},
		RedirectURI: demoRedirect, Dialect: oauthtest.Livepush})
	for i, kv := range env {
		if strings.HasPrefix(kv, "TOKENBROKER_CREDENTIALS=") {
			env[i] = kv + ", " + demoAwaiting
		}
	}
	const up = "TOKENBROKER_LIVEPUSH_NEW_"
	return append(env, up+"PROVIDER=livepush", up+"GRANT=refresh_token", up+"TOKEN_URL="+p.TokenURL(oauthtest.Livepush),
		up+"AUTHORIZE_URL="+p.AuthorizeURL(oauthtest.Livepush), up+"CLIENT_ID=lp-new", up+"CLIENT_SECRET=demo-secret-lp-new",
		up+"SCOPES=streams.read", up+"REDIRECT_URI="+demoRedirect)
}
