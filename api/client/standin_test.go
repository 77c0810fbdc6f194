package client_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/tokenbroker/tokenbroker/api/client"
)

// This module cannot import the daemon, so its tests talk to standIn, which
// answers as the daemon's api package does (api/encode.go, api/errors.go).
// The real server is checked against this client in the main module's
// api/contract tests: change both together.

// standInBroker is what standIn serves, one credential name at a time.
type standInBroker interface {
	// Token returns name's access token and its expiry, or errUnknown or
	// errUnavailable.
	Token(name string) (token string, expiry time.Time, err error)
	// Refresh returns nil, errUnknown, or another error (the provider failed).
	Refresh(name string) error
	Status() []client.CredentialStatus
}

var (
	errUnknown     = errors.New("no such credential")
	errUnavailable = errors.New("provider answered 503")
)

var validName = regexp.MustCompile(`^[a-z0-9_-]{1,64}$`)

// standIn serves GET /v1/tokens/{name}, POST /v1/tokens/{name}/refresh and
// GET /v1/credentials for b, with the daemon's answers and error codes.
func standIn(b standInBroker) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/credentials" && r.Method == http.MethodGet {
			list := struct {
				Credentials []client.CredentialStatus `json:"credentials"`
			}{b.Status()}
			if list.Credentials == nil {
				list.Credentials = []client.CredentialStatus{}
			}
			writeJSON(w, http.StatusOK, list)
			return
		}
		rest, ok := strings.CutPrefix(r.URL.EscapedPath(), "/v1/tokens/")
		if !ok {
			standInError(w, http.StatusNotFound, "not_found", "no such endpoint")
			return
		}
		seg, action, _ := strings.Cut(rest, "/")
		name, err := url.PathUnescape(seg)
		if err != nil || !validName.MatchString(name) {
			standInError(w, http.StatusBadRequest, "invalid_name", fmt.Sprintf("%q is not a valid credential name", seg))
			return
		}
		switch {
		case action == "" && r.Method == http.MethodGet:
			tok, expiry, err := b.Token(name)
			if err != nil {
				brokerError(w, name, err, false)
				return
			}
			writeJSON(w, http.StatusOK, map[string]any{"access_token": tok, "token_type": "Bearer",
				"expires_in": max(int64(time.Until(expiry)/time.Second), 0), "expires_at": expiry.UTC().Truncate(time.Second)})
		case action == "refresh" && r.Method == http.MethodPost:
			if err := b.Refresh(name); err != nil {
				brokerError(w, name, err, true)
				return
			}
			w.WriteHeader(http.StatusNoContent)
		default:
			standInError(w, http.StatusNotFound, "not_found", "no such endpoint")
		}
	})
}

func brokerError(w http.ResponseWriter, name string, err error, refresh bool) {
	switch {
	case errors.Is(err, errUnknown):
		standInError(w, http.StatusNotFound, "unknown_credential", fmt.Sprintf("no credential is named %q", name))
	case errors.Is(err, errUnavailable):
		w.Header().Set("Retry-After", "60")
		standInError(w, http.StatusServiceUnavailable, "token_unavailable", fmt.Sprintf("credential %q: %v", name, err))
	case refresh:
		standInError(w, http.StatusBadGateway, "refresh_failed", fmt.Sprintf("credential %q: %v", name, err))
	default:
		standInError(w, http.StatusServiceUnavailable, "token_unavailable", fmt.Sprintf("credential %q: %v", name, err))
	}
}

func standInError(w http.ResponseWriter, status int, code, desc string) {
	writeJSON(w, status, map[string]string{"error": code, "error_description": desc})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // test values only
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}
