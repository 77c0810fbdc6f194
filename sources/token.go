package sources

import "time"

// Token is what a provider issued, with lifetimes converted to local time.
type Token struct {
	AccessToken  Secret
	RefreshToken Secret // zero when the grant has none
	// IssuedAt is when the request that obtained the token was sent, by the
	// local clock: expiry counts from there so that network time and the
	// provider's clock can only make us early, never late.
	IssuedAt time.Time
	Expiry   time.Time
	// RefreshExpiry is when the refresh token dies; zero means unknown or never.
	RefreshExpiry time.Time
	Scope         string
}

// Lifetime is the access token's whole lifetime.
func (t *Token) Lifetime() time.Duration { return t.Expiry.Sub(t.IssuedAt) }

// Valid reports whether the access token is present and has more than
// margin left at now.
func (t *Token) Valid(now time.Time, margin time.Duration) bool {
	return t != nil && !t.AccessToken.IsZero() && t.Expiry.Sub(now) > margin
}
