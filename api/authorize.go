package api

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/sources"
)

// maxAuthBody bounds an authorize request's body.
const maxAuthBody = 8 << 10

// admin answers 403 unless the caller is the broker's own user or root:
// authorizing replaces what a credential holds.
func (s *Server) admin(w http.ResponseWriter, r *http.Request, name string) bool {
	p := PeerFrom(r.Context())
	if isAdmin(p, selfUID) {
		return true
	}
	s.metrics.denied(name)
	who := "an unknown caller"
	if p != nil {
		who = fmt.Sprintf("uid %d", p.UID)
		s.log.Warn("access denied: authorize needs the broker's user or root", "credential", name,
			"uid", p.UID, "gid", p.GID, "pid", p.PID, "exe", cmp.Or(p.Exe(), "unknown"))
	}
	writeError(w, http.StatusForbidden, "access_denied", fmt.Sprintf(
		"credential %q: %s may not authorize it; run tokenbroker authorize as the broker's user or root", name, who))
	return false
}

// authorizeBegin answers POST /v1/credentials/{name}/authorize.
func (s *Server) authorizeBegin(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if !validName(name) {
		invalidName(w, name)
		return
	}
	if !s.admin(w, r, name) {
		return
	}
	ar, err := s.b.BeginAuthorization(name)
	if err != nil {
		s.authError(w, name, err)
		return
	}
	writeJSON(w, http.StatusOK, wireAuthRequest(ar))
}

// authorizeComplete answers POST /v1/credentials/{name}/authorize/complete
// with {"state": ..., "code": ...}.
func (s *Server) authorizeComplete(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if !validName(name) {
		invalidName(w, name)
		return
	}
	if !s.admin(w, r, name) {
		return
	}
	var in struct {
		State string `json:"state"`
		Code  string `json:"code"`
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxAuthBody+1))
	if err != nil || len(body) > maxAuthBody || json.Unmarshal(body, &in) != nil || in.State == "" || in.Code == "" {
		writeError(w, http.StatusBadRequest, "invalid_request", fmt.Sprintf(
			"credential %q: send JSON {\"state\": ..., \"code\": ...} of at most %d bytes, as tokenbroker authorize does", name, maxAuthBody))
		return
	}
	st, err := s.b.CompleteAuthorization(r.Context(), name, in.State, in.Code)
	if err != nil {
		s.authError(w, name, err)
		return
	}
	writeJSON(w, http.StatusOK, wireStatus(st))
}

func (s *Server) authError(w http.ResponseWriter, name string, err error) {
	switch {
	case errors.Is(err, broker.ErrUnknownCredential):
		s.brokerError(w, name, err, false)
	case errors.Is(err, broker.ErrNotAuthorizable):
		writeError(w, http.StatusConflict, "not_authorizable", err.Error())
	case errors.Is(err, broker.ErrUnknownState):
		writeError(w, http.StatusBadRequest, "invalid_state", err.Error())
	default:
		var pe *sources.ProviderError
		if errors.As(err, &pe) {
			writeError(w, http.StatusBadGateway, "authorization_failed", fmt.Sprintf("%v; %s", err, sources.Advice(err)))
			return
		}
		writeError(w, http.StatusBadGateway, "authorization_failed", err.Error())
	}
}

// writeJSON answers v, which must hold no secret, with encoding/json: these
// answers are off the hot path.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, _ := json.Marshal(v)
	hdr := w.Header()
	hdr["Content-Type"] = jsonContentType
	hdr["Cache-Control"] = noStore
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}
