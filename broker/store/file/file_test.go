package file

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker/store"
	"github.com/tokenbroker/tokenbroker/sources"
)

func TestFileStoreFenceAndDurability(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	defer s.Close()
	ctx := context.Background()
	rec := store.Record{Generation: 2, Token: sources.Token{AccessToken: sources.NewSecret("at"), RefreshToken: sources.NewSecret("rt"), Expiry: time.Now().Add(time.Hour).Round(0)}, Seed: "seed"}
	if err := s.Save(ctx, "cred.abc", rec); err != nil {
		t.Fatal(err)
	}
	for _, gen := range []uint64{1, 2} {
		stale := rec
		stale.Generation = gen
		stale.Token.RefreshToken = sources.NewSecret("stale")
		if err := s.Save(ctx, "cred.abc", stale); !errors.Is(err, store.ErrStale) {
			t.Errorf("Save generation %d over 2: %v; want ErrStale", gen, err)
		}
	}
	got, err := s.Load(ctx, "cred.abc")
	if err != nil || got.Token.RefreshToken.Reveal() != "rt" || got.Generation != 2 || got.Seed != "seed" {
		t.Fatalf("Load = %+v, %v; want the generation-2 record", got, err)
	}
	fi, err := os.Stat(filepath.Join(dir, "cred.abc.json"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("record file mode = %v, %v; want 0600", fi.Mode(), err)
	}
	if leftovers, _ := filepath.Glob(filepath.Join(dir, ".tmp-*")); len(leftovers) != 0 {
		t.Errorf("temporary files left behind: %v", leftovers)
	}
	if _, err := s.Load(ctx, "other"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Load(missing) = %v; want ErrNotFound", err)
	}
	for _, bad := range []string{"", "../x", "a/b", ".lock"} {
		if _, err := s.Load(ctx, bad); err == nil || errors.Is(err, store.ErrNotFound) {
			t.Errorf("Load(%q) = %v; want an invalid key error", bad, err)
		}
	}
}

func TestFileStoreRefusesSharedOrWritableDir(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	_, err := Open(dir)
	if err == nil || !strings.Contains(err.Error(), "in use by another broker") {
		t.Errorf("second OpenFileStore = %v; want 'in use by another broker'", err)
	}
	s.Close()
	open := t.TempDir()
	if err := os.Chmod(open, 0o777); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(open); err == nil || !strings.Contains(err.Error(), "chmod 700") {
		t.Errorf("OpenFileStore(world-writable) = %v; want a refusal saying chmod 700", err)
	}
}
