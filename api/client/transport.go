package client

import (
	"io"
	"net/http"
)

// Transport returns an http.RoundTripper that sends each request through
// base (nil means http.DefaultTransport) with "Authorization: Bearer
// <token>", the token of c.TokenSource(name, nil). It sets the header on a
// copy: the caller's request is not modified.
//
// When the API answers 401, it asks the broker once for a fresh token (a
// forced refresh, then a fetch) and sends the request once more, provided
// its body can be sent again (no body, or Request.GetBody set) and the
// broker gave a different token; the second answer is returned whatever it
// is. Otherwise the 401 is returned as is. Requests refused together with
// the same token share one refresh.
func (c *Client) Transport(name string, base http.RoundTripper) http.RoundTripper {
	return &transport{src: c.TokenSource(name, nil), base: base}
}

// HTTPClient returns an *http.Client whose requests carry name's access
// token; see Transport. It has no timeout: use request contexts.
func (c *Client) HTTPClient(name string) *http.Client {
	return &http.Client{Transport: c.Transport(name, nil)}
}

type transport struct {
	src  *TokenSource
	base http.RoundTripper
}

func (t *transport) baseRT() http.RoundTripper {
	if t.base != nil {
		return t.base
	}
	return http.DefaultTransport
}

// maxDrain bounds what is read of a refused answer's body so that its
// connection can be reused.
const maxDrain = 64 << 10

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	tok, err := t.src.TokenContext(ctx)
	if err != nil {
		closeBody(req)
		return nil, err
	}
	r := req.Clone(ctx)
	tok.SetAuthHeader(r)
	resp, err := t.baseRT().RoundTrip(r)
	if err != nil || resp.StatusCode != http.StatusUnauthorized {
		return resp, err
	}
	replayable := req.Body == nil || req.Body == http.NoBody || req.GetBody != nil
	if !replayable {
		return resp, nil
	}
	fresh, err := t.src.renew(ctx, tok)
	if err != nil || fresh.AccessToken == tok.AccessToken {
		// No other token to try: the API's answer stands.
		return resp, nil
	}
	r = req.Clone(ctx)
	if req.Body != nil && req.Body != http.NoBody {
		body, err := req.GetBody()
		if err != nil {
			return resp, nil
		}
		r.Body = body
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxDrain))
	resp.Body.Close()
	fresh.SetAuthHeader(r)
	return t.baseRT().RoundTrip(r)
}

// CloseIdleConnections closes base's idle connections, for
// http.Client.CloseIdleConnections.
func (t *transport) CloseIdleConnections() {
	if c, ok := t.baseRT().(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		req.Body.Close()
	}
}
