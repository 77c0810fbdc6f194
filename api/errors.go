package api

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/sources"
)

// MaxNameLen is the longest credential name.
const MaxNameLen = broker.MaxNameLen

// validName is the broker's credential-name rule, so that api and the
// broker never disagree about a name.
func validName(name string) bool { return broker.ValidName(name) }

func isNameByte(c byte) bool {
	return 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '_' || c == '-'
}

// maxEcho bounds how much of a rejected name an answer repeats.
const maxEcho = 32

// echo returns a bounded, harmless prefix of a rejected name: letters,
// digits, '_' and '-' are kept, every other byte becomes '?'.
func echo(s string) string {
	n := min(len(s), maxEcho)
	b := make([]byte, 0, n+3)
	for i := 0; i < n; i++ {
		c := s[i]
		if isNameByte(c) || 'A' <= c && c <= 'Z' {
			b = append(b, c)
		} else {
			b = append(b, '?')
		}
	}
	if len(s) > maxEcho {
		b = append(b, "..."...)
	}
	return string(b)
}

const nameRule = "names are 1 to 64 characters of a-z, 0-9, '_' and '-'"

func invalidName(w http.ResponseWriter, name string) int {
	desc := "the credential name is empty: " + nameRule
	if name != "" {
		desc = fmt.Sprintf("%q is not a valid credential name (%d bytes): %s", echo(name), len(name), nameRule)
	}
	return writeError(w, http.StatusBadRequest, "invalid_name", desc)
}

// brokerError answers for an error from Broker.Token or Broker.Refresh
// (refresh tells which) about the valid credential name. The description
// says what failed and what to do; it never holds a secret, since broker
// errors carry none. It returns the status it answered.
func (s *Server) brokerError(w http.ResponseWriter, name string, err error, refresh bool) int {
	var ue *broker.UnavailableError
	var de *broker.DeferredError
	switch {
	case errors.Is(err, broker.ErrUnknownCredential):
		return writeError(w, http.StatusNotFound, "unknown_credential", fmt.Sprintf(
			"no credential is named %q: check the name against GET /v1/credentials or the broker's configuration", name))
	case errors.As(err, &ue):
		if !ue.RetryAt.IsZero() {
			w.Header().Set("Retry-After", strconv.Itoa(retryAfter(ue.RetryAt, time.Now())))
		}
		return writeError(w, http.StatusServiceUnavailable, "token_unavailable", ue.Error()+"; "+ue.Advice())
	case errors.As(err, &de):
		w.Header().Set("Retry-After", strconv.Itoa(retryAfter(de.Until, time.Now())))
		return writeError(w, http.StatusServiceUnavailable, "refresh_deferred", fmt.Sprintf(
			"credential %q: not refreshed now: %v; %s", name, de, de.Advice()))
	case refresh:
		// The provider or the store failed; the broker has logged why.
		return writeError(w, http.StatusBadGateway, "refresh_failed", fmt.Sprintf(
			"credential %q: %v; %s", name, err, sources.Advice(err)))
	default:
		// The caller gave up, or the broker is shutting down.
		return writeError(w, http.StatusServiceUnavailable, "token_unavailable", fmt.Sprintf(
			"credential %q: %v; ask again shortly", name, err))
	}
}

// retryAfter is the Retry-After value for at: whole seconds, rounded up, at
// least 1.
func retryAfter(at, now time.Time) int {
	secs := math.Ceil(at.Sub(now).Seconds())
	if secs < 1 {
		return 1
	}
	if secs > math.MaxInt32 {
		return math.MaxInt32
	}
	return int(secs)
}

func methodNotAllowed(allow string) http.Handler {
	desc := "this endpoint accepts " + strings.ReplaceAll(allow, ", ", " and ") + " only"
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Allow", allow)
		writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", desc)
	})
}

const tokensPrefix = "/v1/tokens/"

// notFound answers paths no route serves. A path under /v1/tokens/ whose
// name segment is not a valid name (empty, dot segments, encoded slashes)
// is a 400 invalid_name, so a caller learns what is wrong with the name.
func notFound(w http.ResponseWriter, r *http.Request) {
	if p := r.URL.Path; strings.HasPrefix(p, tokensPrefix) {
		raw := r.URL.EscapedPath()
		raw = strings.TrimPrefix(raw, tokensPrefix)
		seg, _, _ := strings.Cut(raw, "/")
		if !validName(seg) {
			invalidName(w, seg)
			return
		}
	}
	writeErrorExtra(w, http.StatusNotFound, "not_found",
		"no such endpoint; the broker serves "+strings.Join(endpoints, ", "),
		func(b []byte) []byte {
			b = append(b, `,"endpoints":[`...)
			for i, e := range endpoints {
				if i > 0 {
					b = append(b, ',')
				}
				b = appendJSONString(b, e)
			}
			return append(b, ']')
		})
}
