package fositetest

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

func TestClientCredentials(t *testing.T) {
	s := Start(t, Options{AccessLifetime: 90 * time.Second, Scopes: []string{"read"}})
	ctx := context.Background()

	// Raw request, client_secret_post: check the wire format of expires_in.
	form := url.Values{"grant_type": {"client_credentials"}, "scope": {"read"},
		"client_id": {s.ClientID2}, "client_secret": {s.ClientSecret2}}
	resp, err := http.PostForm(s.TokenURL, form)
	if err != nil {
		t.Fatal(err)
	}
	var raw map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&raw); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || raw["access_token"] == "" || !near90(raw["expires_in"]) ||
		raw["token_type"] != "bearer" || raw["scope"] != "read" || raw["refresh_token"] != nil {
		t.Fatalf("status %d body %v", resp.StatusCode, raw)
	}

	// x/oauth2, client_secret_basic.
	cc := clientcredentials.Config{ClientID: s.ClientID, ClientSecret: s.ClientSecret, TokenURL: s.TokenURL,
		Scopes: []string{"read"}, AuthStyle: oauth2.AuthStyleInHeader}
	tok, err := cc.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if tok.AccessToken == "" || !near90(tok.Extra("expires_in")) || time.Until(tok.Expiry) > 90*time.Second {
		t.Fatalf("token %+v", tok)
	}

	// Each client accepts only its configured method.
	cc.AuthStyle = oauth2.AuthStyleInParams
	if _, err := cc.Token(ctx); !isOAuthErr(err, "invalid_client") {
		t.Fatalf("basic client via post: %v", err)
	}
	if got := s.TokenRequests(); got != 3 {
		t.Fatalf("TokenRequests = %d", got)
	}
}

func TestRefreshRotation(t *testing.T) {
	s := Start(t, Options{})
	ctx := context.Background()
	conf := &oauth2.Config{ClientID: s.ClientID, ClientSecret: s.ClientSecret,
		Endpoint: oauth2.Endpoint{TokenURL: s.TokenURL, AuthStyle: oauth2.AuthStyleInHeader}}

	pw, err := conf.PasswordCredentialsToken(ctx, s.Username, s.Password)
	if err != nil || pw.RefreshToken != "" {
		t.Fatalf("without offline scope: %v %+v", err, pw)
	}
	rt0 := s.InitialRefreshToken(t)

	refresh := func(rt string) (*oauth2.Token, error) {
		return conf.TokenSource(ctx, &oauth2.Token{RefreshToken: rt}).Token()
	}
	t1, err := refresh(rt0)
	if err != nil {
		t.Fatal(err)
	}
	if t1.AccessToken == "" || t1.RefreshToken == "" || t1.RefreshToken == rt0 {
		t.Fatalf("not rotated: %+v", t1)
	}

	// Reuse of the rotated token: invalid_grant, exact body.
	form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt0}}
	req, _ := http.NewRequest(http.MethodPost, s.TokenURL, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(s.ClientID, s.ClientSecret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	const want = `{"error":"invalid_grant","error_description":"The provided authorization grant (e.g., authorization code, resource owner credentials) or refresh token is invalid, expired, revoked, does not match the redirection URI used in the authorization request, or was issued to another client. The refresh token was already used."}`
	if resp.StatusCode != 400 || string(body) != want {
		t.Fatalf("reuse: %d %s", resp.StatusCode, body)
	}

	// Family revocation: the successor is dead too; the reused one is now deleted.
	if _, err := refresh(t1.RefreshToken); !isOAuthErr(err, "invalid_grant") {
		t.Fatalf("successor after reuse: %v", err)
	}
	if _, err := refresh(rt0); !isOAuthErr(err, "invalid_grant") {
		t.Fatalf("reused token again: %v", err)
	}
}

func TestAuthorizationCode(t *testing.T) {
	s := Start(t, Options{})
	conf := &oauth2.Config{ClientID: s.ClientID2, ClientSecret: s.ClientSecret2, RedirectURL: s.RedirectURL,
		Scopes:   []string{"offline_access"},
		Endpoint: oauth2.Endpoint{AuthURL: s.AuthURL, TokenURL: s.TokenURL, AuthStyle: oauth2.AuthStyleInParams}}
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noFollow.Get(conf.AuthCodeURL("state-123456789"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || loc.Query().Get("code") == "" {
		t.Fatalf("authorize: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	tok, err := conf.Exchange(context.Background(), loc.Query().Get("code"))
	if err != nil || tok.AccessToken == "" || tok.RefreshToken == "" {
		t.Fatalf("exchange: %v %+v", err, tok)
	}
}

// near90 reports whether v is a JSON number 89 or 90: fosite derives expires_in
// from an expiry rounded to the second, so it may be one below the lifetime.
func near90(v any) bool { f, ok := v.(float64); return ok && (f == 89 || f == 90) }

func isOAuthErr(err error, code string) bool {
	var re *oauth2.RetrieveError
	return errors.As(err, &re) && re.ErrorCode == code
}
