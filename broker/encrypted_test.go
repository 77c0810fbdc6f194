package broker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker/redistest"
	"github.com/tokenbroker/tokenbroker/broker/store"
	redisstore "github.com/tokenbroker/tokenbroker/broker/store/redis"
	"github.com/tokenbroker/tokenbroker/broker/store/storetest"
	"github.com/tokenbroker/tokenbroker/sources"
)

// With a key, neither the state dir nor a Redis dump holds a token in clear;
// a broker with the wrong key refuses to start instead of overwriting.
func TestEncryptedStores(t *testing.T) {
	ctx := context.Background()
	rec := store.Record{Generation: 1, Token: sources.Token{AccessToken: sources.NewSecret("AT-CLEAR-TEXT"), RefreshToken: sources.NewSecret("RT-CLEAR-TEXT"), Expiry: time.Now().Add(time.Hour)}}
	dir := t.TempDir()
	fs := openStore(t, dir)
	fs.Sealer = storetest.Sealer(t, storetest.Key("k1", 1))
	if err := fs.Save(ctx, "c.1", rec); err != nil {
		t.Fatal(err)
	}
	srv := redistest.Start(t)
	rs, _ := redisstore.New(redisstore.Options{Client: srv.Client(), Sealer: storetest.Sealer(t, storetest.Key("k1", 1))})
	if err := rs.Save(ctx, "c.1", rec); err != nil {
		t.Fatal(err)
	}
	files, _ := os.ReadDir(dir)
	for _, f := range files {
		b, _ := os.ReadFile(filepath.Join(dir, f.Name()))
		if bytes.Contains(b, []byte("CLEAR-TEXT")) {
			t.Errorf("state file %s holds a token in clear", f.Name())
		}
	}
	c := srv.Client()
	keys, _ := c.Keys(ctx, "*").Result()
	for _, k := range keys {
		dump, _ := c.Dump(ctx, k).Bytes()
		vals, _ := c.HGetAll(ctx, k).Result()
		if bytes.Contains(dump, []byte("CLEAR-TEXT")) || strings.Contains(fmt.Sprint(vals), "CLEAR-TEXT") {
			t.Errorf("Redis key %s holds a token in clear", k)
		}
	}
	if got, err := rs.Load(ctx, "c.1"); err != nil || got.Token.RefreshToken.Reveal() != "RT-CLEAR-TEXT" {
		t.Errorf("Redis round trip = %v", err)
	}

	// Wrong key: Start fails and the record is untouched.
	fs.Close()
	fs2 := openStore(t, dir)
	defer fs2.Close()
	fs2.Sealer = storetest.Sealer(t, storetest.Key("k2", 2))
	p := newFakeProvider(time.Hour, false)
	b, err := New(Options{Store: fs2, Logger: quiet}, []Credential{{Name: "c", Provider: "fake", Source: fakeSource{p, sources.ClientCredentials}, Fingerprint: "x"}})
	if err != nil {
		t.Fatal(err)
	}
	b.creds["c"].key = "c.1"
	if err := b.Start(ctx); !errors.Is(err, store.ErrUnknownKey) || !strings.Contains(err.Error(), "k1") {
		t.Errorf("Start with the wrong key = %v; want ErrUnknownKey naming k1", err)
	}
	if err := fs2.Save(ctx, "c.1", store.Record{Generation: 9}); !errors.Is(err, store.ErrUnknownKey) {
		t.Errorf("Save over a record sealed with another key = %v; want ErrUnknownKey", err)
	}
}
