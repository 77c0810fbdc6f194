package sources

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Sentinels for the decisions a caller makes about a failed exchange; test
// with errors.Is.
var (
	// ErrRejected: the provider refused the credential itself (invalid_client,
	// invalid_grant, invalid_scope, unauthorized_client, ...). Retrying
	// cannot help; the operator must fix the configuration.
	ErrRejected = errors.New("provider rejected the credential")
	// ErrReauthorize: a refresh token was refused with invalid_grant. The
	// credential needs a new authorization (a new refresh token).
	ErrReauthorize = errors.New("refresh token refused: re-authorization needed")
	// ErrAnswerLost: the request was sent in full, then the connection
	// closed with no answer. The provider may have acted on it: spent a
	// refresh token and issued a successor that is lost with the answer.
	ErrAnswerLost = errors.New("the request was sent but its answer was lost")
)

// lostError is a transport error after the request was written.
type lostError struct{ err error }

func (e *lostError) Error() string {
	return e.err.Error() + " (the request was sent, so the provider may have acted on it)"
}
func (e *lostError) Unwrap() error        { return e.err }
func (e *lostError) Is(target error) bool { return target == ErrAnswerLost }

// permanentCodes are RFC 6749 §5.2 codes that no retry can fix.
var permanentCodes = map[string]bool{
	"invalid_request":        true,
	"invalid_client":         true,
	"invalid_grant":          true,
	"unauthorized_client":    true,
	"unsupported_grant_type": true,
	"invalid_scope":          true,
	"access_denied":          true,
}

// ProviderError is a token endpoint answer that carried no usable token.
type ProviderError struct {
	Grant       Grant
	Status      int    // HTTP status; 200 when an error came in a 200 answer
	Code        string // RFC 6749 §5.2 error code, when the answer had one
	Description string // provider's error_description, shortened and cleaned
	// Problem says what was wrong with an answer that had no error code
	// (an HTML page, an empty body, JSON without access_token, ...).
	Problem    string
	RetryAfter time.Duration // from Retry-After, 0 when absent
}

func (e *ProviderError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "provider answered %d", e.Status)
	if e.Code != "" {
		fmt.Fprintf(&b, " %s", e.Code)
	}
	if e.Description != "" {
		fmt.Fprintf(&b, " (%s)", e.Description)
	}
	if e.Problem != "" {
		fmt.Fprintf(&b, ": %s", e.Problem)
	}
	if e.RetryAfter > 0 {
		fmt.Fprintf(&b, ", retry after %s", e.RetryAfter)
	}
	return b.String()
}

// Permanent reports whether retrying the same request is useless.
func (e *ProviderError) Permanent() bool { return permanentCodes[e.Code] }

// Is matches ErrRejected for permanent codes and ErrReauthorize for a
// refused refresh token.
func (e *ProviderError) Is(target error) bool {
	switch target {
	case ErrRejected:
		return e.Permanent()
	case ErrReauthorize:
		return e.Code == "invalid_grant" && e.Grant == RefreshToken
	}
	return false
}

// Advice says what an operator should do about err, in one sentence.
func Advice(err error) string {
	var pe *ProviderError
	switch {
	case errors.Is(err, ErrNoRefreshToken):
		return "authorize it (tokenbroker authorize NAME) or set its REFRESH_TOKEN"
	case errors.Is(err, ErrReauthorize):
		return "the refresh token is no longer valid: authorize again (tokenbroker authorize NAME) or set a new refresh token"
	case errors.As(err, &pe) && pe.Code == "invalid_client":
		// Sources names no variable; the setting's suffix is what an
		// operator greps for, as with SCOPES and REFRESH_TOKEN.
		return "the provider does not accept the client's authentication: check the client id and secret, and the client authentication method (its _CLIENT_AUTH setting: client_secret_basic or client_secret_post)"
	case errors.As(err, &pe) && pe.Code == "invalid_scope":
		return "the provider refuses the requested scopes: check the SCOPES setting"
	case errors.Is(err, ErrRejected):
		return "the provider refuses this credential's configuration: check it, then restart or reload the broker"
	default:
		return "the broker retries with backoff; check the provider's status if it persists"
	}
}

// descriptionMax bounds provider-supplied text. Descriptions that say what
// to change run to a few sentences; past this, text is noise or a flood.
const descriptionMax = 600

// clean drops control characters from provider-supplied text, so a hostile
// answer cannot forge log lines, and bounds it without cutting a word: a
// description cut before the words that say what to change is worse than
// none. Over the bound, it keeps whole sentences (or whole words) and marks
// the cut with "…".
func clean(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			r = ' '
		}
		b.WriteRune(r)
		if b.Len() > descriptionMax {
			break
		}
	}
	out := b.String()
	if b.Len() <= descriptionMax {
		return out
	}
	out = out[:descriptionMax]
	if i := lastSentenceEnd(out); i > descriptionMax/2 {
		return out[:i] + " …"
	}
	if i := strings.LastIndexByte(out, ' '); i > 0 {
		return strings.TrimRight(out[:i], " ") + " …"
	}
	return strings.ToValidUTF8(out, "") + "…"
}

// lastSentenceEnd is the index just past the last ". ", "! " or "? " in s,
// or 0.
func lastSentenceEnd(s string) int {
	end := 0
	for _, p := range []string{". ", "! ", "? "} {
		if i := strings.LastIndex(s, p); i >= 0 && i+1 > end {
			end = i + 1
		}
	}
	return end
}
