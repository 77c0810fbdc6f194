package sources

import (
	"encoding/base64"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func jwt(claims string) string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"none"}`)) + "." + enc([]byte(claims)) + ".sig"
}

func preset(t testing.TB, provider string, g Grant) Dialect {
	t.Helper()
	d, err := Preset(provider, g)
	if err != nil {
		t.Fatal(err)
	}
	d.TokenURL = "http://127.0.0.1/token"
	return d
}

// The documented answers of every provider, as PROVIDERS.md lists them.
func TestParseProviderAnswers(t *testing.T) {
	tests := []struct {
		name        string
		provider    string
		grant       Grant
		body        string
		life        time.Duration
		refresh     string
		refreshLife time.Duration
	}{
		{"firework cc", "firework", ClientCredentials,
			`{ "access_token": "` + jwt(`{"scope":"videos:write","bid":"b1","exp":1767326645}`) + `", "expires_in": 3600 }`, time.Hour, "", 0},
		{"firework user", "firework", RefreshToken,
			`{ "refresh_token": "R", "scope": "openid", "access_token": "A", "token_type": "bearer", "created_at": "2021-01-21T00:05:31Z", "refresh_token_expires_in": 600000, "token_expires_in": 7200 }`,
			2 * time.Hour, "R", 600000 * time.Second},
		{"livepush", "livepush", RefreshToken,
			`{ "access_token": "uatin87h3m1opd908pa9sdxxxx", "refresh_token": "rftkljosua2in87h3m1opd90xxxxx", "token_type": "access_token", "expires_in": 3600 }`,
			time.Hour, "rftkljosua2in87h3m1opd90xxxxx", 0},
		{"ingest string expires_in", "ingest", RefreshToken,
			`{"access_token": "asdkjzuiuqw.sjxuqiopx;jspwie.sjdisjkaqwup;xjw", "token_type": "Bearer", "expires_in": "86400", "refresh_token": "thisisafakerefreshtokenvaluebutitisprettyclose", "scope": "read_videos,write_videos"}`,
			24 * time.Hour, "thisisafakerefreshtokenvaluebutitisprettyclose", 0},
		{"vsrs", "vsrs", Password, `{"token_type":"Bearer","expires_in":900,"access_token":"A","refresh_token":"R"}`, 15 * time.Minute, "R", 0},
		{"jwt exp-iat when no expires_in", "generic", ClientCredentials,
			`{"access_token":"` + jwt(`{"sub":"u","iat":100,"exp":1900}`) + `","token_type":"Bearer"}`, 30 * time.Minute, "", 0},
		{"jwt exp against local clock", "generic", ClientCredentials,
			`{"access_token":"` + jwt(`{"exp":`+strconv.FormatInt(t0.Unix()+600, 10)+`}`) + `"}`, 10 * time.Minute, "", 0},
		{"no lifetime at all: default", "generic", ClientCredentials, `{"access_token":"A"}`, DefaultLifetime, "", 0},
		{"zero expires_in: default", "generic", ClientCredentials, `{"access_token":"A","expires_in":0}`, DefaultLifetime, "", 0},
		{"negative expires_in: default", "generic", ClientCredentials, `{"access_token":"A","expires_in":-5}`, DefaultLifetime, "", 0},
		{"ten years: capped", "generic", ClientCredentials, `{"access_token":"A","expires_in":315360000}`, MaxLifetime, "", 0},
		{"absurd number: capped", "generic", ClientCredentials, `{"access_token":"A","expires_in":1e300}`, MaxLifetime, "", 0},
		{"garbage string: default", "generic", ClientCredentials, `{"access_token":"A","expires_in":"soon"}`, DefaultLifetime, "", 0},
		{"fractional string", "generic", ClientCredentials, `{"access_token":"A","expires_in":" 1.5 "}`, 1500 * time.Millisecond, "", 0},
		{"unknown fields ignored", "generic", ClientCredentials, `{"access_token":"A","expires_in":60,"x":{"y":[1,2]}}`, time.Minute, "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := preset(t, tt.provider, tt.grant)
			tok, err := d.parse(tt.grant, answer{status: 200, header: http.Header{}, body: []byte(tt.body)}, t0)
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			if tok.AccessToken.IsZero() {
				t.Error("no access token")
			}
			if got := tok.Lifetime(); got != tt.life {
				t.Errorf("lifetime = %v; want %v", got, tt.life)
			}
			if got := tok.RefreshToken.Reveal(); got != tt.refresh {
				t.Errorf("refresh token = %q; want %q", got, tt.refresh)
			}
			if tt.refreshLife > 0 && tok.RefreshExpiry.Sub(t0) != tt.refreshLife {
				t.Errorf("refresh lifetime = %v; want %v", tok.RefreshExpiry.Sub(t0), tt.refreshLife)
			}
		})
	}
}

// Bad answers become ProviderErrors that say what was wrong and classify.
func TestParseBadAnswers(t *testing.T) {
	tests := []struct {
		name      string
		grant     Grant
		status    int
		ctype     string
		retry     string
		body      string
		problem   string // substring of the error
		rejected  bool
		reauth    bool
		retryWait time.Duration
	}{
		{"html page", ClientCredentials, 502, "text/html", "", "<html><body>Bad gateway</body></html>", "HTML", false, false, 0},
		{"html with 200", ClientCredentials, 200, "text/html", "", "<!doctype html>", "HTML", false, false, 0},
		{"empty body", ClientCredentials, 200, "", "", "", "empty body", false, false, 0},
		{"truncated json", ClientCredentials, 200, "application/json", "", `{"access_token":"A","exp`, "truncated", false, false, 0},
		{"json array", ClientCredentials, 200, "application/json", "", `[1,2]`, "not an object", false, false, 0},
		{"missing access_token", ClientCredentials, 200, "application/json", "", `{"expires_in":3600}`, "no access_token", false, false, 0},
		{"error in a 200", RefreshToken, 200, "application/json", "", `{"error":"invalid_grant"}`, "invalid_grant", true, true, 0},
		{"invalid_grant on refresh", RefreshToken, 400, "application/json", "", `{"error":"invalid_grant","error_description":"revoked"}`, "revoked", true, true, 0},
		{"invalid_grant on password", Password, 400, "application/json", "", `{"error":"invalid_grant"}`, "invalid_grant", true, false, 0},
		{"invalid_client", ClientCredentials, 401, "application/json", "", `{"error":"invalid_client"}`, "invalid_client", true, false, 0},
		{"invalid_scope", ClientCredentials, 400, "application/json", "", `{"error":"invalid_scope"}`, "invalid_scope", true, false, 0},
		{"temporarily_unavailable", ClientCredentials, 503, "application/json", "7", `{"error":"temporarily_unavailable"}`, "temporarily_unavailable", false, false, 7 * time.Second},
		{"server_error", ClientCredentials, 500, "application/json", "", `{"error":"server_error"}`, "server_error", false, false, 0},
		{"429 retry-after date", ClientCredentials, 429, "", t0.Add(90 * time.Second).Format(http.TimeFormat), "", "429", false, false, 90 * time.Second},
		{"429 huge retry-after capped", ClientCredentials, 429, "", "99999999999", "", "429", false, false, time.Hour},
		{"bad token_type", ClientCredentials, 200, "application/json", "", `{"access_token":"A","token_type":"mac"}`, `"mac"`, false, false, 0},
		{"error code with control chars", ClientCredentials, 400, "application/json", "", `{"error":"x\nlevel=ERROR forged"}`, "x level=ERROR", false, false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := preset(t, "generic", tt.grant)
			h := http.Header{}
			if tt.ctype != "" {
				h.Set("Content-Type", tt.ctype)
			}
			if tt.retry != "" {
				h.Set("Retry-After", tt.retry)
			}
			_, err := d.parse(tt.grant, answer{status: tt.status, header: h, body: []byte(tt.body)}, t0)
			var pe *ProviderError
			if !errors.As(err, &pe) {
				t.Fatalf("err = %v; want a *ProviderError", err)
			}
			if !strings.Contains(err.Error(), tt.problem) {
				t.Errorf("error %q does not mention %q", err, tt.problem)
			}
			if strings.ContainsAny(err.Error(), "\n\r") {
				t.Errorf("error %q contains a line break", err)
			}
			if got := errors.Is(err, ErrRejected); got != tt.rejected {
				t.Errorf("Is(ErrRejected) = %v; want %v", got, tt.rejected)
			}
			if got := errors.Is(err, ErrReauthorize); got != tt.reauth {
				t.Errorf("Is(ErrReauthorize) = %v; want %v", got, tt.reauth)
			}
			if pe.RetryAfter != tt.retryWait {
				t.Errorf("RetryAfter = %v; want %v", pe.RetryAfter, tt.retryWait)
			}
		})
	}
}

// Livepush's token_type "access_token" is a bearer token there, and nowhere else.
func TestTokenTypeIsPerDialect(t *testing.T) {
	body := []byte(`{"access_token":"A","token_type":"access_token","expires_in":60}`)
	lp := preset(t, "livepush", RefreshToken)
	if _, err := lp.parse(RefreshToken, answer{200, http.Header{}, body}, t0); err != nil {
		t.Errorf("livepush rejected its own token_type: %v", err)
	}
	gen := preset(t, "generic", RefreshToken)
	if _, err := gen.parse(RefreshToken, answer{200, http.Header{}, body}, t0); err == nil {
		t.Error("generic accepted token_type access_token; want an error")
	}
}

// The parser never panics, never returns a token without an access token or
// with a lifetime outside (0, max], and never puts the access token it was
// given into an error.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		`{ "access_token": "x", "expires_in": 3600 }`,
		`{ "refresh_token": "R", "scope": "openid", "access_token": "A", "token_type": "bearer", "created_at": "2021-01-21T00:05:31Z", "refresh_token_expires_in": 600000, "token_expires_in": 7200 }`,
		`{ "access_token": "uat", "refresh_token": "rft", "token_type": "access_token", "expires_in": 3600 }`,
		`{"access_token": "a.b.c", "token_type": "Bearer", "expires_in": "86400", "refresh_token": "r", "scope": "read_videos,write_videos"}`,
		`{"access_token":"` + jwt(`{"exp":1900,"iat":100}`) + `"}`,
		`{"error":"invalid_grant","error_description":"gone"}`,
		`<html></html>`, ``, `{"access_token":`, `{"expires_in":1e309}`,
	} {
		f.Add(200, s)
	}
	f.Add(429, `{"error":"temporarily_unavailable"}`)
	dialects := []Dialect{preset(f, "firework", RefreshToken), preset(f, "livepush", RefreshToken), preset(f, "ingest", ClientCredentials), preset(f, "generic", Password)}
	f.Fuzz(func(t *testing.T, status int, body string) {
		for _, d := range dialects {
			tok, err := d.parse(RefreshToken, answer{status: status, header: http.Header{"Retry-After": {body}}, body: []byte(body)}, t0)
			if err != nil {
				var pe *ProviderError
				if !errors.As(err, &pe) {
					t.Fatalf("error %T is not a *ProviderError", err)
				}
				if pe.RetryAfter < 0 || pe.RetryAfter > time.Hour {
					t.Fatalf("RetryAfter %v out of range", pe.RetryAfter)
				}
				continue
			}
			if tok.AccessToken.IsZero() {
				t.Fatal("token without access token")
			}
			if l := tok.Lifetime(); l <= 0 || l > MaxLifetime {
				t.Fatalf("lifetime %v out of (0, %v]", l, MaxLifetime)
			}
		}
	})
}
