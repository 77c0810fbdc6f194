// Package seal encrypts stored records at rest (AES-256-GCM), for every
// store alike.
package seal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"regexp"
	"strings"

	"github.com/tokenbroker/tokenbroker/broker/store"
)

// SealKey is one AES-256 key with its id. Printing it shows only the id.
type SealKey struct {
	ID  string
	Key [32]byte
}

func (k SealKey) String() string   { return "key " + k.ID + " [redacted]" }
func (k SealKey) GoString() string { return k.String() }

var keyID = regexp.MustCompile(`^[A-Za-z0-9_-]{1,32}$`)

// ParseKeys reads TOKENBROKER_ENCRYPTION_KEY: a comma-separated list of
// ID:KEY, KEY being 32 bytes in base64 (standard or URL-safe, padded or
// not) or 64 hex digits. The first key seals; all of them open. Errors name
// the entry, never the key material.
func ParseKeys(s string) ([]SealKey, error) {
	var keys []SealKey
	seen := map[string]bool{}
	for i, entry := range strings.Split(s, ",") {
		entry = strings.TrimSpace(entry)
		id, material, ok := strings.Cut(entry, ":")
		switch {
		case entry == "":
			return nil, fmt.Errorf("entry %d is empty; use ID:KEY[,ID:KEY…]", i+1)
		case !ok || !keyID.MatchString(id):
			return nil, fmt.Errorf("entry %d is not ID:KEY with an ID of 1-32 letters, digits, '_' or '-'", i+1)
		case seen[id]:
			return nil, fmt.Errorf("key id %q is listed twice", id)
		}
		raw, ok := decodeKey(strings.TrimSpace(material))
		if !ok {
			return nil, fmt.Errorf("key %q is not 32 bytes in base64 or 64 hex digits (generate one with: openssl rand -base64 32)", id)
		}
		k := SealKey{ID: id}
		copy(k.Key[:], raw)
		keys = append(keys, k)
		seen[id] = true
	}
	return keys, nil
}

func decodeKey(s string) ([]byte, bool) {
	if b, err := hex.DecodeString(s); err == nil && len(b) == 32 {
		return b, true
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil && len(b) == 32 {
			return b, true
		}
	}
	return nil, false
}

// Sealer encrypts and authenticates stored records with AES-256-GCM. Its
// envelope is text, "tbx1.<key id>.<base64url(nonce|ciphertext)>", so it
// fits a file and a Redis string alike and says which key opens it.
type Sealer struct {
	active string
	aeads  map[string]cipher.AEAD
}

const envelopePrefix = "tbx1."

// NewSealer returns a Sealer over keys, the first sealing. With no keys it
// passes values through in plaintext (Enabled reports false).
func NewSealer(keys []SealKey) (*Sealer, error) {
	s := &Sealer{aeads: map[string]cipher.AEAD{}}
	for i, k := range keys {
		block, err := aes.NewCipher(k.Key[:])
		if err != nil {
			return nil, err
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, err
		}
		s.aeads[k.ID] = aead
		if i == 0 {
			s.active = k.ID
		}
	}
	return s, nil
}

// Enabled reports whether values are encrypted.
func (s *Sealer) Enabled() bool { return s != nil && s.active != "" }

// Seal encrypts plain bound to aad (the store key: a sealed record cannot be
// moved to another credential).
func (s *Sealer) Seal(plain, aad []byte) []byte {
	if !s.Enabled() {
		return plain
	}
	aead := s.aeads[s.active]
	buf := make([]byte, aead.NonceSize(), aead.NonceSize()+len(plain)+aead.Overhead())
	if _, err := rand.Read(buf); err != nil {
		panic("crypto/rand failed: " + err.Error()) // never happens on Linux
	}
	buf = aead.Seal(buf, buf, plain, aad)
	return []byte(envelopePrefix + s.active + "." + base64.RawURLEncoding.EncodeToString(buf))
}

// Open reverses Seal. A value that is no envelope (written before a key was
// set) is returned as it is, with sealed false, to be sealed on its next
// write.
func (s *Sealer) Open(value, aad []byte) (plain []byte, sealed bool, err error) {
	rest, ok := strings.CutPrefix(string(value), envelopePrefix)
	if !ok {
		return value, false, nil
	}
	id, body, ok := strings.Cut(rest, ".")
	if !ok {
		return nil, true, fmt.Errorf("%w: malformed envelope", store.ErrCorrupt)
	}
	if s == nil || !s.Enabled() {
		return nil, true, fmt.Errorf("%w %q: the store is encrypted; set TOKENBROKER_ENCRYPTION_KEY", store.ErrUnknownKey, clip(id))
	}
	aead := s.aeads[id]
	if aead == nil {
		return nil, true, fmt.Errorf("%w %q: add that key to TOKENBROKER_ENCRYPTION_KEY (after the active one)", store.ErrUnknownKey, clip(id))
	}
	raw, err := base64.RawURLEncoding.DecodeString(body)
	if err != nil || len(raw) < aead.NonceSize()+aead.Overhead() {
		return nil, true, fmt.Errorf("%w: malformed envelope", store.ErrCorrupt)
	}
	n := aead.NonceSize()
	plain, err = aead.Open(nil, raw[:n], raw[n:], aad)
	if err != nil {
		// Wrong key material under a known id, or tampering: either way the
		// record must not be overwritten, so this is not store.ErrCorrupt.
		return nil, true, fmt.Errorf("%w: cannot decrypt with key %q (wrong key material, or the record was tampered with)", store.ErrUnknownKey, id)
	}
	return plain, true, nil
}

func clip(s string) string {
	if len(s) > 32 {
		return s[:32] + "…"
	}
	return s
}

// Encode seals rec's stored form for key. A nil Sealer stores plaintext.
func (s *Sealer) Encode(key string, rec store.Record) []byte {
	return s.Seal(store.Marshal(rec), []byte(key))
}

// Decode opens and parses a stored value of key.
func (s *Sealer) Decode(key string, value []byte) (store.Record, error) {
	plain, _, err := s.Open(value, []byte(key))
	if err != nil {
		return store.Record{}, err
	}
	return store.Unmarshal(plain)
}
