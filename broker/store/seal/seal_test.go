package seal_test

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/tokenbroker/tokenbroker/broker/store"
	"github.com/tokenbroker/tokenbroker/broker/store/seal"
	"github.com/tokenbroker/tokenbroker/broker/store/storetest"
	"github.com/tokenbroker/tokenbroker/sources"
)

func TestSealRotationAndRefusals(t *testing.T) {
	a, b := storetest.Key("a", 1), storetest.Key("b", 2)
	plain, aad := []byte(`{"v":1,"refresh_token":"RT-SECRET"}`), []byte("cred.123")
	env := storetest.Sealer(t, a).Seal(plain, aad)
	if bytes.Contains(env, []byte("RT-SECRET")) || !bytes.HasPrefix(env, []byte("tbx1.a.")) {
		t.Fatalf("envelope %q: want tbx1.a. and no plaintext", env)
	}
	// Rotation: the new key first, the old one still opens.
	got, sealed, err := storetest.Sealer(t, b, a).Open(env, aad)
	if err != nil || !sealed || !bytes.Equal(got, plain) {
		t.Fatalf("open with [b a] = %q, %v, %v", got, sealed, err)
	}
	if env2 := storetest.Sealer(t, b, a).Seal(plain, aad); !bytes.HasPrefix(env2, []byte("tbx1.b.")) {
		t.Errorf("reseal uses %q; want the active key b", env2[:7])
	}
	tests := []struct {
		name string
		s    *seal.Sealer
		val  []byte
		aad  []byte
		want error
	}{
		{"unknown key id", storetest.Sealer(t, b), env, aad, store.ErrUnknownKey},
		{"wrong key material, same id", storetest.Sealer(t, storetest.Key("a", 9)), env, aad, store.ErrUnknownKey},
		{"moved to another credential", storetest.Sealer(t, a), env, []byte("other.456"), store.ErrUnknownKey},
		{"no key configured", storetest.Sealer(t), env, aad, store.ErrUnknownKey},
		{"malformed", storetest.Sealer(t, a), []byte("tbx1.a.!!!"), aad, store.ErrCorrupt},
	}
	for _, tt := range tests {
		_, _, err := tt.s.Open(tt.val, tt.aad)
		if !errors.Is(err, tt.want) {
			t.Errorf("%s: err = %v; want %v", tt.name, err, tt.want)
		}
	}
	for i := len("tbx1.a."); i < len(env); i++ {
		bad := bytes.Clone(env)
		bad[i] ^= 0x01
		if out, _, err := storetest.Sealer(t, a).Open(bad, aad); err == nil && bytes.Equal(out, plain) {
			t.Fatalf("flipping byte %d still opened", i)
		}
	}
	// Plaintext written before a key was set passes through, to be sealed on its next write.
	if out, sealed, err := storetest.Sealer(t, a).Open(plain, aad); err != nil || sealed || !bytes.Equal(out, plain) {
		t.Errorf("plaintext passthrough = %q, %v, %v", out, sealed, err)
	}
}

func TestParseKeys(t *testing.T) {
	raw := bytes.Repeat([]byte{7}, 32)
	b64, hexKey := base64.StdEncoding.EncodeToString(raw), fmt.Sprintf("%x", raw)
	keys, err := seal.ParseKeys("new:" + b64 + ", old:" + hexKey)
	if err != nil || len(keys) != 2 || keys[0].ID != "new" || keys[1].Key != [32]byte(raw) {
		t.Fatalf("ParseKeys = %v, %v", keys, err)
	}
	for _, bad := range []string{"", "k1", "k1:" + b64[:10], "bad id:" + b64, "k:" + b64 + ",k:" + hexKey, "k:" + b64 + ",,"} {
		_, err := seal.ParseKeys(bad)
		if err == nil {
			t.Errorf("seal.ParseKeys(%q) accepted it", bad)
		} else if strings.Contains(err.Error(), b64[:10]) || strings.Contains(err.Error(), hexKey[:10]) {
			t.Errorf("ParseKeys error %q echoes key material", err)
		}
	}
	if s := fmt.Sprintf("%v %+v %#v", keys[0], keys[0], keys); strings.Contains(s, "7, 7") || strings.Contains(s, "[7 7") {
		t.Errorf("printing a key shows its material: %s", s)
	}
}

func FuzzOpen(f *testing.F) {
	s := storetest.Sealer(f, storetest.Key("a", 1))
	f.Add(s.Seal([]byte(`{"v":1}`), []byte("k")))
	f.Add([]byte(`{"v":1,"gen":3}`))
	f.Add([]byte("tbx1.a."))
	f.Add([]byte("tbx1..x"))
	f.Fuzz(func(t *testing.T, v []byte) {
		out, sealed, err := s.Open(v, []byte("k"))
		if err == nil && !sealed && !bytes.Equal(out, v) {
			t.Fatal("a non-envelope came back changed")
		}
		_, _ = s.Decode("k", v)
	})
}

func BenchmarkSeal(b *testing.B) {
	s := storetest.Sealer(b, storetest.Key("a", 1))
	rec := store.Marshal(store.Record{Generation: 1, Token: sources.Token{AccessToken: sources.NewSecret(strings.Repeat("x", 800))}})
	b.ReportAllocs()
	for b.Loop() {
		_, _, _ = s.Open(s.Seal(rec, []byte("k")), []byte("k"))
	}
}
