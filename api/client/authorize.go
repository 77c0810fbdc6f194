package client

import (
	"context"
	"net/http"
	"net/url"
	"time"
)

// AuthRequest is an authorization the broker has begun for a credential:
// send the browser to URL; the provider sends it back to RedirectURI with
// a code and State.
type AuthRequest struct {
	URL         string    `json:"authorize_url"`
	RedirectURI string    `json:"redirect_uri"`
	State       string    `json:"state"`
	ExpiresAt   time.Time `json:"expires_at"`
}

// BeginAuthorization asks the broker to start the authorization-code flow
// for name. The broker keeps the PKCE verifier; only its own user and root
// may ask.
func (c *Client) BeginAuthorization(ctx context.Context, name string) (AuthRequest, error) {
	var ar AuthRequest
	err := c.do(ctx, http.MethodPost, "/v1/credentials/"+url.PathEscape(name)+"/authorize", &name, nil, &ar)
	return ar, err
}

// CompleteAuthorization hands the broker the code the provider sent back
// for state; the broker exchanges it, stores the token in its store (the
// fleet's, with Redis) and keeps it fresh.
func (c *Client) CompleteAuthorization(ctx context.Context, name, state, code string) (CredentialStatus, error) {
	var st CredentialStatus
	in := struct {
		State string `json:"state"`
		Code  string `json:"code"`
	}{state, code}
	err := c.do(ctx, http.MethodPost, "/v1/credentials/"+url.PathEscape(name)+"/authorize/complete", &name, in, &st)
	return st, err
}
