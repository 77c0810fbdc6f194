package sources

import (
	"net/http"
	"strings"
	"testing"
)

// benchAnswers are one answer of each dialect, shaped as PROVIDERS.md and
// the local provider (oauthtest) write them, with access tokens of realistic
// sizes (Firework's and Ingest's are JWTs).
func benchAnswers() []struct {
	name, provider string
	grant          Grant
	body           string
} {
	fwJWT := jwt(`{"sub":"`+strings.Repeat("b", 36)+`","scope":"videos:write livestreams:read","bid":"b1","iat":1767322645,"exp":1767326245}`) + strings.Repeat("s", 20)
	ingestJWS := jwt(`{"sub":"user-1234","exp":1767408645,"scope":"read_videos,write_videos"}`)
	return []struct {
		name, provider string
		grant          Grant
		body           string
	}{
		{"firework_cc", "firework", ClientCredentials,
			`{"access_token":"` + fwJWT + `","expires_in":3600}`},
		{"firework_user", "firework", RefreshToken,
			`{"refresh_token":"rt_ABCDEFGHIJKLMNOPQRSTUVWXYZ234567","scope":"openid","access_token":"` + fwJWT + `","token_type":"bearer","created_at":"2026-01-02T03:04:05Z","refresh_token_expires_in":600000,"token_expires_in":7200}`},
		{"livepush", "livepush", RefreshToken,
			`{"access_token":"uatin87h3m1opd908pa9sdxxxx","refresh_token":"rftkljosua2in87h3m1opd90xxxxx","token_type":"access_token","expires_in":3600}`},
		{"ingest", "ingest", ClientCredentials,
			`{"access_token":"` + ingestJWS + `","token_type":"Bearer","expires_in":"86400","scope":"read_videos,write_videos"}`},
		{"vsrs", "vsrs", Password,
			`{"token_type":"Bearer","expires_in":900,"access_token":"at_ABCDEFGHIJKLMNOPQRSTUVWXYZ234567","refresh_token":"rt_ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"}`},
		{"generic_jwt_exp_only", "generic", ClientCredentials,
			`{"access_token":"` + fwJWT + `","token_type":"Bearer"}`},
	}
}

// BenchmarkParse measures turning one token endpoint answer of each dialect
// into a Token: the work of one refresh once the answer has arrived.
func BenchmarkParse(b *testing.B) {
	for _, tc := range benchAnswers() {
		b.Run(tc.name, func(b *testing.B) {
			d := preset(b, tc.provider, tc.grant)
			a := answer{status: 200, header: http.Header{"Content-Type": {"application/json"}}, body: []byte(tc.body)}
			if _, err := d.parse(tc.grant, a, t0); err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(tc.body)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := d.parse(tc.grant, a, t0); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("error_invalid_grant", func(b *testing.B) {
		d := preset(b, "generic", RefreshToken)
		a := answer{status: 400, header: http.Header{"Content-Type": {"application/json"}},
			body: []byte(`{"error":"invalid_grant","error_description":"the refresh token was revoked"}`)}
		b.ReportAllocs()
		for b.Loop() {
			if _, err := d.parse(RefreshToken, a, t0); err == nil {
				b.Fatal("no error")
			}
		}
	})
}
