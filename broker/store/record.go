package store

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/tokenbroker/tokenbroker/sources"
)

// recordV1 is the stored form of a Record. Secrets are revealed only here,
// on their way into a store.
type recordV1 struct {
	V             int       `json:"v"`
	Generation    uint64    `json:"gen"`
	AccessToken   string    `json:"access_token,omitempty"`
	RefreshToken  string    `json:"refresh_token,omitempty"`
	IssuedAt      time.Time `json:"issued_at"`
	Expiry        time.Time `json:"expiry"`
	RefreshExpiry time.Time `json:"refresh_expiry,omitzero"`
	Scope         string    `json:"scope,omitempty"`
	Seed          string    `json:"seed,omitempty"`
	UpdatedAt     time.Time `json:"updated_at"`
}

// Marshal is the stored form of r, before sealing.
func Marshal(r Record) []byte {
	b, _ := json.Marshal(recordV1{
		V:             1,
		Generation:    r.Generation,
		AccessToken:   r.Token.AccessToken.Reveal(),
		RefreshToken:  r.Token.RefreshToken.Reveal(),
		IssuedAt:      r.Token.IssuedAt,
		Expiry:        r.Token.Expiry,
		RefreshExpiry: r.Token.RefreshExpiry,
		Scope:         r.Token.Scope,
		Seed:          r.Seed,
		UpdatedAt:     r.UpdatedAt,
	})
	return b
}

// Unmarshal parses what Marshal wrote.
func Unmarshal(b []byte) (Record, error) {
	var w recordV1
	if err := json.Unmarshal(b, &w); err != nil {
		// The JSON error may quote the input, which holds tokens.
		return Record{}, fmt.Errorf("%w: not valid JSON", ErrCorrupt)
	}
	if w.V != 1 {
		return Record{}, fmt.Errorf("%w: version %d is not supported (this broker reads version 1)", ErrCorrupt, w.V)
	}
	return Record{
		Generation: w.Generation,
		Token: sources.Token{
			AccessToken:   sources.NewSecret(w.AccessToken),
			RefreshToken:  sources.NewSecret(w.RefreshToken),
			IssuedAt:      w.IssuedAt,
			Expiry:        w.Expiry,
			RefreshExpiry: w.RefreshExpiry,
			Scope:         w.Scope,
		},
		Seed:      w.Seed,
		UpdatedAt: w.UpdatedAt,
	}, nil
}
