package main

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/sources"
	"github.com/tokenbroker/tokenbroker/sources/oauthtest"
)

// A reload swaps what the running Source sends, through the secrets
// function it was built with: the next request carries the new client
// secret and password, the log names what changed and holds neither.
func TestReloadSwapsWhatTheSourceSends(t *testing.T) {
	p := oauthtest.StartTest(t, oauthtest.Options{})
	const secret1, secret2, pw1, pw2 = "vs-secret-ONE-71", "vs-secret-TWO-72", "alice-pw-ONE-81", "alice-pw-TWO-82"
	env := func(secret, pw string) []string {
		return baseEnv("TOKENBROKER_CREDENTIALS=vs", "TOKENBROKER_VS_PROVIDER=vsrs",
			"TOKENBROKER_VS_TOKEN_URL="+p.TokenURL(oauthtest.VSRS), "TOKENBROKER_VS_CLIENT_ID=vs",
			"TOKENBROKER_VS_CLIENT_SECRET="+secret, "TOKENBROKER_VS_USERNAME=alice", "TOKENBROKER_VS_PASSWORD="+pw)
	}
	p.AddClient(oauthtest.Client{ID: "vs", Secret: secret1, Dialect: oauthtest.VSRS})
	p.AddUser("alice", pw1)
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	bc, l, err := credential(mustLoad(t, env(secret1, pw1)).Credentials[0], &http.Client{Timeout: 10 * time.Second}, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := bc.Source.Token(ctx, sources.Token{}); err != nil {
		t.Fatalf("with the secrets configured at start: %v", err)
	}

	// The provider moves to a new client secret and password.
	p.AddClient(oauthtest.Client{ID: "vs", Secret: secret2, Dialect: oauthtest.VSRS})
	p.AddUser("alice", pw2)
	if _, err := bc.Source.Token(ctx, sources.Token{}); !errors.Is(err, sources.ErrRejected) {
		t.Fatalf("before the reload: %v; want ErrRejected", err)
	}
	applySecrets(mustLoad(t, env(secret2, pw2)), []*live{l}, log, "test")
	tok, err := bc.Source.Token(ctx, sources.Token{})
	if err != nil || !p.Valid(tok.AccessToken.Reveal()) {
		t.Fatalf("after the reload: %v; want a valid token", err)
	}
	for _, want := range []string{"client secret reloaded", "password reloaded"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("the log does not say %q:\n%s", want, logs.String())
		}
	}
	for _, s := range []string{secret1, secret2, pw1, pw2} {
		if strings.Contains(logs.String(), s) {
			t.Errorf("the log holds a secret:\n%s", logs.String())
		}
	}

	// The same configuration again changes nothing.
	logs.Reset()
	applySecrets(mustLoad(t, env(secret2, pw2)), []*live{l}, log, "test")
	if !strings.Contains(logs.String(), "none changed") {
		t.Errorf("a reload with nothing new: %s; want \"none changed\"", logs.String())
	}
}
