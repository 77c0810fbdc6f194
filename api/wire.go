package api

import (
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
)

// credentialStatus is a credential's condition on the wire: each entry of
// GET /v1/credentials and the answer to completing an authorization. The
// client module decodes it as client.CredentialStatus (it cannot import
// this one); api/contract keeps the two in step field by field.
type credentialStatus struct {
	Name        string    `json:"name"`
	Provider    string    `json:"provider"`
	Grant       string    `json:"grant"`
	State       string    `json:"state"`
	ExpiresAt   time.Time `json:"expires_at,omitzero"`
	LastRefresh time.Time `json:"last_refresh,omitzero"`
	NextRefresh time.Time `json:"next_refresh,omitzero"`
	Failures    int       `json:"failures,omitempty"`
	LastError   string    `json:"last_error,omitempty"`
	Action      string    `json:"action,omitempty"`
	Generation  uint64    `json:"generation"`
}

// wireStatus is st as the API sends it. A field added to broker.Status is
// not sent until it is added here (api/contract fails until then).
func wireStatus(st broker.Status) credentialStatus {
	return credentialStatus{
		Name:        st.Name,
		Provider:    st.Provider,
		Grant:       st.Grant,
		State:       string(st.State),
		ExpiresAt:   st.ExpiresAt,
		LastRefresh: st.LastRefresh,
		NextRefresh: st.NextRefresh,
		Failures:    st.Failures,
		LastError:   st.LastError,
		Action:      st.Action,
		Generation:  st.Generation,
	}
}

// authRequest is a begun authorization on the wire, decoded by the client
// module as client.AuthRequest.
type authRequest struct {
	URL         string    `json:"authorize_url"`
	RedirectURI string    `json:"redirect_uri"`
	State       string    `json:"state"`
	ExpiresAt   time.Time `json:"expires_at"`
}

func wireAuthRequest(ar broker.AuthRequest) authRequest {
	return authRequest{URL: ar.URL, RedirectURI: ar.RedirectURI, State: ar.State, ExpiresAt: ar.Expires.UTC()}
}
