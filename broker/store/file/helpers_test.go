package file

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker/store"
	"github.com/tokenbroker/tokenbroker/sources"
)

func openStore(t *testing.T, dir string) *Store {
	t.Helper()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// benchRecord is a record as a refresh writes it: a 300-byte JWT-sized
// access token and a rotating refresh token.
func benchRecord(gen uint64) store.Record {
	now := time.Now()
	return store.Record{Generation: gen, UpdatedAt: now, Seed: "0123456789abcdef01234567", Token: sources.Token{
		AccessToken:  sources.NewSecret(strings.Repeat("a", 300)),
		RefreshToken: sources.NewSecret(fmt.Sprintf("rt_%040d", gen)),
		IssuedAt:     now, Expiry: now.Add(time.Hour), Scope: "openid",
	}}
}
