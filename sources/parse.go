package sources

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// maxBody bounds what is read of a token endpoint answer.
const maxBody = 1 << 20

// answer is one token endpoint response, as read off the wire.
type answer struct {
	status int
	header http.Header
	body   []byte
}

// parse turns an answer to a request for grant g, sent at start, into a
// Token or a *ProviderError. It never trusts the provider's clock: the
// lifetime counts from start.
func (d *Dialect) parse(g Grant, a answer, start time.Time) (Token, error) {
	perr := &ProviderError{Grant: g, Status: a.status, RetryAfter: retryAfter(a.header.Get("Retry-After"), start)}
	var fields map[string]json.RawMessage
	body := bytes.TrimSpace(a.body)
	if err := json.Unmarshal(body, &fields); err != nil || fields == nil {
		perr.Problem = describeBody(a, body)
		return Token{}, perr
	}
	if code := str(fields["error"]); code != "" {
		perr.Code = clean(code)
		perr.Description = clean(str(fields["error_description"]))
		return Token{}, perr
	}
	if a.status < 200 || a.status > 299 {
		perr.Problem = "JSON answer with no error code"
		return Token{}, perr
	}
	access := str(fields["access_token"])
	if access == "" {
		perr.Problem = "answer has no access_token"
		return Token{}, perr
	}
	if tt := str(fields["token_type"]); !d.acceptsTokenType(tt) {
		perr.Problem = "token_type " + strconv.Quote(clean(tt)) + " is not a bearer token"
		return Token{}, perr
	}
	t := Token{
		AccessToken:  NewSecret(access),
		RefreshToken: NewSecret(str(fields["refresh_token"])),
		IssuedAt:     start,
		Scope:        clean(str(fields["scope"])),
	}
	life, ok := firstSeconds(fields, d.lifetimeFields())
	if !ok {
		life, ok = jwtLifetime(access, start)
	}
	if !ok {
		life = d.defaultLifetime()
	}
	t.Expiry = start.Add(min(life, d.maxLifetime()))
	if rl, ok := firstSeconds(fields, d.refreshLifetimeFields()); ok {
		t.RefreshExpiry = start.Add(rl)
	}
	return t, nil
}

func describeBody(a answer, body []byte) string {
	ct := a.header.Get("Content-Type")
	switch {
	case len(body) == 0:
		return "empty body"
	case strings.Contains(ct, "html") || bytes.HasPrefix(body, []byte("<")):
		return "HTML instead of JSON (a proxy or error page?)"
	case json.Valid(body):
		return "JSON that is not an object"
	case body[0] == '{':
		return "truncated or malformed JSON"
	default:
		return "body is not JSON (Content-Type " + strconv.Quote(clean(ct)) + ")"
	}
}

// str reads a JSON string; anything else reads as "".
func str(raw json.RawMessage) string {
	var s string
	if len(raw) == 0 || json.Unmarshal(raw, &s) != nil {
		return ""
	}
	return s
}

// firstSeconds reads the first field that holds a positive number of
// seconds, as a JSON number or a numeric string. Zero, negative and
// non-numeric values are treated as absent.
func firstSeconds(fields map[string]json.RawMessage, names []string) (time.Duration, bool) {
	for _, n := range names {
		if d, ok := seconds(fields[n]); ok {
			return d, true
		}
	}
	return 0, false
}

// maxSeconds keeps the conversion to time.Duration from overflowing.
const maxSeconds = float64(math.MaxInt64 / int64(time.Second))

func seconds(raw json.RawMessage) (time.Duration, bool) {
	if len(raw) == 0 {
		return 0, false
	}
	s := string(raw)
	if raw[0] == '"' {
		s = str(raw)
	}
	f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil || math.IsNaN(f) || f <= 0 {
		return 0, false
	}
	if f > maxSeconds {
		f = maxSeconds
	}
	return time.Duration(f * float64(time.Second)), true
}

// jwtLifetime reads exp (and iat, when present) from an access token that is
// a JWT. With iat the lifetime is exp-iat, immune to the provider's clock
// offset; without it, exp is compared with the local clock.
func jwtLifetime(tok string, start time.Time) (time.Duration, bool) {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return 0, false
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return 0, false
	}
	var c struct {
		Exp json.Number `json:"exp"`
		Iat json.Number `json:"iat"`
	}
	if json.Unmarshal(payload, &c) != nil {
		return 0, false
	}
	exp, err := c.Exp.Float64()
	if err != nil || exp <= 0 || exp > maxSeconds {
		return 0, false
	}
	var life float64
	if iat, err := c.Iat.Float64(); err == nil && iat > 0 {
		life = exp - iat
	} else {
		life = exp - float64(start.Unix())
	}
	if life <= 0 {
		return 0, false
	}
	return time.Duration(life * float64(time.Second)), true
}

// retryAfter reads Retry-After as delay-seconds or an HTTP date, capped at an
// hour so a hostile value cannot park a credential forever.
func retryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	var d time.Duration
	if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil {
		d = time.Duration(min(max(n, 0), 3600)) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	}
	return max(0, min(d, time.Hour))
}
