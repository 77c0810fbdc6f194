package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// Header is the request header every client request carries (value "1").
// A browser cannot send it to a Unix socket, and a server may require it.
const Header = "X-Tokenbroker"

// ErrUnreachable matches (with errors.Is) the error returned when nothing
// answers on the socket.
var ErrUnreachable = errors.New("tokenbroker is unreachable")

// Token is an access token as the broker hands it out.
type Token struct {
	AccessToken string
	TokenType   string    // "Bearer"
	ExpiresAt   time.Time // when the token expires
	ExpiresIn   int       // seconds left when the broker answered, rounded down
}

// String implements fmt.Stringer without revealing the access token.
func (t Token) String() string {
	return fmt.Sprintf("%s token [redacted], expires %s", t.TokenType, t.ExpiresAt.UTC().Format(time.RFC3339))
}

// GoString implements fmt.GoStringer without revealing the access token.
func (t Token) GoString() string { return "client.Token{" + t.String() + "}" }

// LogValue implements slog.LogValuer without revealing the access token.
func (t Token) LogValue() slog.Value {
	return slog.GroupValue(slog.String("token_type", t.TokenType), slog.Time("expires_at", t.ExpiresAt))
}

// CredentialStatus is a credential's condition as GET /v1/credentials
// reports it. It never holds a secret.
type CredentialStatus struct {
	Name        string    `json:"name"`
	Provider    string    `json:"provider"`
	Grant       string    `json:"grant"`
	State       string    `json:"state"` // pending, ok, retrying, reauthorize, rejected
	ExpiresAt   time.Time `json:"expires_at,omitzero"`
	LastRefresh time.Time `json:"last_refresh,omitzero"`
	NextRefresh time.Time `json:"next_refresh,omitzero"`
	Failures    int       `json:"failures,omitempty"`
	LastError   string    `json:"last_error,omitempty"`
	Action      string    `json:"action,omitempty"` // what an operator should do
	Generation  uint64    `json:"generation"`
}

// Error is an error answer from the broker.
type Error struct {
	Status      int    // HTTP status
	Code        string // unknown_credential, token_unavailable, invalid_name, ...
	Description string // what failed and what to do
	Credential  string // the credential asked about

	aboutCredential bool // the request named a credential, even ""
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("tokenbroker")
	if e.Credential != "" || e.aboutCredential {
		fmt.Fprintf(&b, ": credential %q", e.Credential)
	}
	code := e.Code
	if code == "" {
		code = "error"
	}
	fmt.Fprintf(&b, ": %s (%d)", code, e.Status)
	if e.Description != "" {
		b.WriteString(": ")
		b.WriteString(e.Description)
	}
	return b.String()
}

// Client talks to one broker socket. It keeps connections alive between
// requests and is safe for concurrent use.
type Client struct {
	socket  string
	hc      *http.Client
	sources sync.Map // credential name -> *TokenSource, for TokenSource(name, nil)
}

// The URL host is ignored: every connection goes to the socket.
const baseURL = "http://tokenbroker"

// maxAnswer bounds what the client reads of an answer, and of each entry of
// the credentials listing, which as a whole grows with the credentials.
const maxAnswer = 1 << 20

// New returns a client for the broker listening on socket; "" means
// DefaultSocket().
func New(socket string) *Client {
	if socket == "" {
		socket = DefaultSocket()
	}
	d := &net.Dialer{Timeout: 5 * time.Second}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			c, err := d.DialContext(ctx, "unix", socket)
			if err != nil {
				return nil, &unreachableError{socket: socket, err: err}
			}
			return c, nil
		},
		// Proxy stays nil: $HTTP_PROXY must never see a token request.
		MaxIdleConns:        8,
		MaxIdleConnsPerHost: 8,
		IdleConnTimeout:     90 * time.Second, // below the server's 120 s
		DisableCompression:  true,
	}
	return &Client{socket: socket, hc: &http.Client{
		Transport: tr,
		// A safety net for callers without a deadline; a handout waits at
		// most a few seconds for a refresh.
		Timeout:       time.Minute,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

// Socket returns the socket path the client dials.
func (c *Client) Socket() string { return c.socket }

// Close releases the client's idle connections.
func (c *Client) Close() error {
	c.hc.CloseIdleConnections()
	return nil
}

// Token fetches name's current access token.
func (c *Client) Token(ctx context.Context, name string) (Token, error) {
	var w struct {
		AccessToken string    `json:"access_token"`
		TokenType   string    `json:"token_type"`
		ExpiresIn   int       `json:"expires_in"`
		ExpiresAt   time.Time `json:"expires_at"`
	}
	if err := c.do(ctx, http.MethodGet, "/v1/tokens/"+url.PathEscape(name), &name, nil, &w); err != nil {
		return Token{}, err
	}
	if w.AccessToken == "" {
		return Token{}, fmt.Errorf("tokenbroker: credential %q: the answer holds no access token", name)
	}
	return Token{AccessToken: w.AccessToken, TokenType: w.TokenType, ExpiresAt: w.ExpiresAt, ExpiresIn: w.ExpiresIn}, nil
}

// Credentials lists every credential's condition. The listing is read as
// a stream, one credential at a time: it has no size limit as a whole
// (5,000 credentials answer over 1 MB), only each entry has.
func (c *Client) Credentials(ctx context.Context) ([]CredentialStatus, error) {
	const path = "/v1/credentials"
	resp, err := c.send(ctx, http.MethodGet, path, nil, nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body := &entryLimit{r: resp.Body, left: maxAnswer}
	out, err := decodeListing(json.NewDecoder(body), body)
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			err = ctxErr
		}
		return nil, fmt.Errorf("tokenbroker at %s: GET %s: reading the answer: %w", c.socket, path, err)
	}
	return out, nil
}

// errNotListing is a listing that is not {"credentials":[...]}.
var errNotListing = errors.New("the answer is not the expected JSON")

// decodeListing reads {"credentials":[...]} one entry at a time, giving each
// entry its own maxAnswer bytes. Other members are skipped, as
// json.Unmarshal would.
func decodeListing(dec *json.Decoder, limit *entryLimit) ([]CredentialStatus, error) {
	out := []CredentialStatus{}
	delim := func(want json.Delim) error {
		t, err := dec.Token()
		if err != nil {
			return err
		}
		if d, ok := t.(json.Delim); !ok || d != want {
			return errNotListing
		}
		return nil
	}
	if err := delim('{'); err != nil {
		return nil, err
	}
	for dec.More() {
		limit.left = maxAnswer
		t, err := dec.Token()
		if err != nil {
			return nil, err
		}
		if key, _ := t.(string); key != "credentials" {
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				return nil, err
			}
			continue
		}
		if err := delim('['); err != nil {
			return nil, err
		}
		for dec.More() {
			limit.left = maxAnswer
			var st CredentialStatus
			if err := dec.Decode(&st); err != nil {
				return nil, err
			}
			out = append(out, st)
		}
		if err := delim(']'); err != nil {
			return nil, err
		}
	}
	if err := delim('}'); err != nil {
		return nil, err
	}
	return out, nil
}

// entryLimit fails a read once left bytes have been read since the caller
// last set it: a listing entry (or a broken answer) larger than that is not
// read into memory.
type entryLimit struct {
	r    io.Reader
	left int64
}

func (l *entryLimit) Read(p []byte) (int, error) {
	if l.left <= 0 {
		return 0, fmt.Errorf("an entry of the answer is larger than %d bytes", maxAnswer)
	}
	if int64(len(p)) > l.left {
		p = p[:l.left]
	}
	n, err := l.r.Read(p)
	l.left -= int64(n)
	return n, err
}

// Refresh makes the broker refresh name's token now and waits for the
// outcome.
func (c *Client) Refresh(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodPost, "/v1/tokens/"+url.PathEscape(name)+"/refresh", &name, nil, nil)
}

// do sends one request and decodes a 2xx answer into out (when not nil), or
// turns an error answer into an *Error.
// credential is nil for requests about no credential; in, when not nil,
// is sent as a JSON body.
func (c *Client) do(ctx context.Context, method, path string, credential *string, in, out any) error {
	resp, err := c.send(ctx, method, path, credential, in)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return fmt.Errorf("tokenbroker at %s: %s %s: reading the answer: %w", c.socket, method, path, err)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(body, out); err != nil {
		// The body may hold a token: never quote it.
		return fmt.Errorf("tokenbroker at %s: %s %s: the answer is not the expected JSON", c.socket, method, path)
	}
	return nil
}

// send sends one request and returns a 2xx answer for the caller to read
// and close, or turns an error answer into an *Error.
func (c *Client) send(ctx context.Context, method, path string, credential *string, in any) (*http.Response, error) {
	var reqBody io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, fmt.Errorf("tokenbroker: %s %s: %w", method, path, err)
		}
		reqBody = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, baseURL+path, reqBody)
	if err != nil {
		return nil, fmt.Errorf("tokenbroker: %s %s: %w", method, path, err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set(Header, "1")
	req.Header.Set("Accept", "application/json")
	resp, err := c.hc.Do(req)
	if err != nil {
		var ue *unreachableError
		if errors.As(err, &ue) {
			return nil, ue
		}
		if ctxErr := ctx.Err(); ctxErr != nil {
			err = ctxErr
		}
		return nil, fmt.Errorf("tokenbroker at %s: %s %s: %w", c.socket, method, path, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		defer resp.Body.Close()
		body, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
		if err != nil {
			return nil, fmt.Errorf("tokenbroker at %s: %s %s: reading the answer: %w", c.socket, method, path, err)
		}
		return nil, answerError(resp.StatusCode, body, credential)
	}
	return resp, nil
}

func answerError(status int, body []byte, credential *string) *Error {
	e := &Error{Status: status}
	if credential != nil {
		e.Credential, e.aboutCredential = *credential, true
	}
	var w struct {
		Code        string `json:"error"`
		Description string `json:"error_description"`
	}
	if json.Unmarshal(body, &w) == nil && w.Code != "" {
		e.Code, e.Description = w.Code, w.Description
		return e
	}
	// Not the broker's error JSON (a proxy, an older server): say so
	// without quoting a body we do not understand.
	e.Description = "the answer is not a tokenbroker error (" + http.StatusText(status) + ")"
	return e
}

// unreachableError is a failed dial to the socket.
type unreachableError struct {
	socket string
	err    error
}

func (e *unreachableError) Error() string {
	return fmt.Sprintf("cannot reach tokenbroker at %s: is it running? (set %s): %v", e.socket, SocketEnv, e.err)
}

func (e *unreachableError) Is(target error) bool { return target == ErrUnreachable }
func (e *unreachableError) Unwrap() error        { return e.err }
