package broker

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/internal/tbtest"
	"github.com/tokenbroker/tokenbroker/sources"
)

// New refuses a name the api could not serve and config would not accept:
// the rule is CheckName, in one place.
func TestNewEnforcesNameRule(t *testing.T) {
	for _, name := range []string{"", "FW", "fw.prod", "a b", string(make([]byte, MaxNameLen+1))} {
		_, err := New(Options{Store: openStore(t, t.TempDir())}, []Credential{{Name: name, Source: fakeSource{}}})
		var ne *NameError
		if !errors.As(err, &ne) {
			t.Errorf("New with name %q: err %v, want a *NameError", name, err)
		}
	}
}

// A refresh_token credential nobody authorized yet is a state the operator
// acts on, said once at WARN, not an ERROR in a fresh broker's first lines.
func TestNeverAuthorizedIsNotAnError(t *testing.T) {
	logs := &tbtest.SyncBuffer{}
	src := &sources.RefreshTokenSource{Endpoint: &sources.Endpoint{}}
	b, err := New(Options{Store: openStore(t, t.TempDir()), Logger: slog.New(slog.NewTextHandler(logs, nil))},
		[]Credential{{Name: "user", Provider: "p", Source: src, Fingerprint: "fp"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(logs.String(), "waiting for authorization"); {
		if time.Now().After(deadline) {
			t.Fatalf("no line about the missing authorization:\n%s", logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if out := logs.String(); strings.Contains(out, "level=ERROR") || strings.Count(out, "waiting for authorization") != 1 ||
		!strings.Contains(out, "level=WARN msg=\"no refresh token yet") {
		t.Errorf("want one WARN and no ERROR:\n%s", out)
	}
}
