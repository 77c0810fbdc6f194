package api

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
)

// The proxy: /v1/proxy/{name}/{path...} on the socket forwards to the
// credential's upstream with its token, so a program that can speak HTTP
// over the socket but cannot fetch a token still calls the API. It is never
// an open relay: the upstream is fixed by the operator, the path stays
// under the upstream's prefix, and nothing in the request chooses a host.

// Upstream is the API a credential's proxy forwards to.
type Upstream struct {
	// URL is an origin with an optional path prefix, as ParseUpstream
	// returns it.
	URL *url.URL
	// HeaderTimeout bounds the wait for the upstream's answer headers;
	// 0 means DefaultUpstreamTimeout.
	HeaderTimeout time.Duration
	// MaxDuration bounds a whole exchange, both bodies streamed; 0 means
	// DefaultUpstreamMaxDuration.
	MaxDuration time.Duration
}

// Proxy defaults.
const (
	DefaultUpstreamTimeout     = 30 * time.Second
	DefaultUpstreamMaxDuration = 10 * time.Minute
	// maxReplayBody is the largest request body kept to send again after
	// an upstream 401; a larger one streams and is not retried.
	maxReplayBody = 64 << 10
)

const proxyPrefix = "/v1/proxy/"

// ParseUpstream checks an upstream URL: https, or http to a loopback host
// only (the token would otherwise cross the network in clear); no user,
// query or fragment. The path, if any, is the prefix every proxied path
// stays under.
func ParseUpstream(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, errors.New("is not a URL")
	}
	switch {
	case u.Scheme != "https" && u.Scheme != "http":
		return nil, errors.New("is not an https:// URL")
	case u.Host == "" || u.Opaque != "":
		return nil, errors.New("has no host")
	case u.Scheme == "http" && !loopbackHost(u.Hostname()):
		return nil, errors.New("is http:// to a host that is not loopback, which would send the token in clear")
	case u.User != nil:
		return nil, errors.New("holds a user name or password, and the proxy sends the credential's token, nothing else")
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
		return nil, errors.New("has a query or fragment")
	}
	prefix := strings.TrimRight(u.EscapedPath(), "/")
	if _, err := upstreamPath("", prefix); err != nil {
		return nil, fmt.Errorf("has a path prefix the proxy refuses: %w", err)
	}
	out := &url.URL{Scheme: u.Scheme, Host: u.Host}
	setEscapedPath(out, prefix)
	return out, nil
}

func loopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// errPath says why a proxied path is refused.
type errPath string

func (e errPath) Error() string { return string(e) }

// upstreamPath maps rest, the escaped path after /v1/proxy/{name} ("" or
// starting with "/"), onto prefix, the upstream's escaped path without a
// trailing slash. Each segment of rest goes through as the caller escaped
// it, but only when no decoding of it (once or twice) makes a dot segment
// or a slash, so the upstream cannot read the path as leaving prefix
// whatever it normalises; an empty segment is refused except at the end.
func upstreamPath(prefix, rest string) (string, error) {
	if rest == "" {
		if prefix == "" {
			return "/", nil
		}
		return prefix, nil
	}
	if rest[0] != '/' {
		return "", errPath("the path does not begin with /")
	}
	segs := strings.Split(rest[1:], "/")
	for i, seg := range segs {
		if seg == "" {
			if i == len(segs)-1 {
				continue // a trailing slash
			}
			return "", errPath("the path has an empty segment (//)")
		}
		if err := checkSegment(seg); err != nil {
			return "", err
		}
	}
	return prefix + rest, nil
}

func checkSegment(seg string) error {
	s := seg
	for range 2 { // as sent, then as a server that decodes twice reads it
		if strings.ContainsAny(s, "\\") {
			return errPath("the path holds a backslash")
		}
		if s == "." || s == ".." {
			return errPath("the path holds a dot segment (. or ..), plain or percent-encoded")
		}
		if !strings.Contains(s, "%") {
			break
		}
		d, err := url.PathUnescape(s)
		if err != nil {
			if s == seg {
				return errPath("the path holds a malformed percent-encoding")
			}
			break // a literal %, which a second decoding would choke on too
		}
		if strings.ContainsAny(d, "/\\") {
			return errPath("the path holds an encoded slash or backslash (%2F, %5C)")
		}
		if strings.ContainsFunc(d, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			return errPath("the path holds an encoded control character")
		}
		s = d
	}
	if s == "." || s == ".." {
		return errPath("the path holds a dot segment (. or ..), plain or percent-encoded")
	}
	return nil
}

// setEscapedPath sets u's path from its escaped form.
func setEscapedPath(u *url.URL, esc string) {
	p, err := url.PathUnescape(esc)
	if err != nil {
		p = esc
	}
	u.Path, u.RawPath = p, esc
	if u.EscapedPath() != esc {
		u.RawPath = "" // Go escapes Path its own way; both mean the same bytes
	}
}

// proxyRoute is one credential's upstream, ready to serve.
type proxyRoute struct {
	target *url.URL
	max    time.Duration
	rp     *httputil.ReverseProxy
}

// proxyCall is one proxied request's state, passed to the Rewrite, the
// transport and the handlers through the request's context.
type proxyCall struct {
	name   string
	target url.URL // the upstream URL without the query
	token  string  // the token the last attempt carried
	uid    uint32  // who asked, for the refresh limit
	status int     // the upstream's answer, 0 when none came
	errMsg string  // why no answer came
	retry  bool    // a 401 was answered by a retry with a fresh token
}

type proxyCallKey struct{}

func callOf(ctx context.Context) *proxyCall {
	pc, _ := ctx.Value(proxyCallKey{}).(*proxyCall)
	return pc
}

// newProxies builds the routes of ups. Credentials that share an origin and
// a header timeout share a connection pool.
func (s *Server) newProxies(ups map[string]Upstream) map[string]*proxyRoute {
	if len(ups) == 0 {
		return nil
	}
	type poolKey struct {
		scheme, host string
		timeout      time.Duration
	}
	pools := map[poolKey]*httputil.ReverseProxy{}
	routes := make(map[string]*proxyRoute, len(ups))
	for name, u := range ups {
		if u.URL == nil {
			continue
		}
		ht := u.HeaderTimeout
		if ht <= 0 {
			ht = DefaultUpstreamTimeout
		}
		max := u.MaxDuration
		if max <= 0 {
			max = DefaultUpstreamMaxDuration
		}
		k := poolKey{u.URL.Scheme, u.URL.Host, ht}
		rp := pools[k]
		if rp == nil {
			rp = s.newReverseProxy(&http.Transport{
				Proxy:                 http.ProxyFromEnvironment,
				DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
				ForceAttemptHTTP2:     true,
				TLSHandshakeTimeout:   10 * time.Second,
				ResponseHeaderTimeout: ht,
				ExpectContinueTimeout: time.Second,
				MaxIdleConns:          256,
				MaxIdleConnsPerHost:   64,
				IdleConnTimeout:       90 * time.Second,
			})
			pools[k] = rp
		}
		routes[name] = &proxyRoute{target: u.URL, max: max, rp: rp}
	}
	return routes
}

// dropped are request headers the upstream never sees: the caller's own
// credentials and the broker's header, and every header that tells a server
// where a request came from or which host or path it meant (ReverseProxy
// already drops the hop-by-hop ones and those named in Connection).
var dropped = []string{"Authorization", "Proxy-Authorization", "X-Tokenbroker", "Forwarded", "X-Real-Ip",
	"X-Original-Url", "X-Rewrite-Url", "X-Original-Host", "X-Host", "Via"}

func (s *Server) newReverseProxy(tr *http.Transport) *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pc := callOf(pr.In.Context())
			q := pr.Out.URL.RawQuery // as ReverseProxy cleaned it
			u := pc.target
			u.RawQuery = q
			pr.Out.URL = &u
			pr.Out.Host = "" // the upstream's own host, never the caller's
			h := pr.Out.Header
			for _, k := range dropped {
				delete(h, k)
			}
			for k := range h {
				if strings.HasPrefix(k, "X-Forwarded-") {
					delete(h, k)
				}
			}
		},
		Transport: &proxyTransport{s: s, base: tr},
		// Each chunk goes on as it comes: a slow stream (events, a long
		// poll) must not wait for a buffer to fill.
		FlushInterval:  -1,
		ModifyResponse: s.proxyResponse,
		ErrorHandler:   s.proxyError,
		ErrorLog:       slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
}

// proxyTransport sets the token on each attempt and answers an upstream 401
// with one retry carrying a fresh token, when the body can be sent again.
type proxyTransport struct {
	s    *Server
	base http.RoundTripper
}

func (t *proxyTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	pc := callOf(req.Context())
	req = req.Clone(req.Context()) // a RoundTripper does not change its request
	replay, err := replayable(req)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+pc.token)
	resp, err := t.base.RoundTrip(req)
	if err != nil || resp.StatusCode != http.StatusUnauthorized || !replay {
		return resp, err
	}
	tok, ok := t.s.retryToken(req.Context(), pc)
	if !ok {
		return resp, nil // the caller sees the upstream's 401
	}
	_, _ = io.CopyN(io.Discard, resp.Body, 4<<10) // lets a small answer keep its connection
	resp.Body.Close()
	again := req.Clone(req.Context())
	if req.GetBody != nil {
		if again.Body, err = req.GetBody(); err != nil {
			return nil, err
		}
	}
	pc.token, pc.retry = tok, true
	t.s.metrics.proxyRetried(pc.name)
	again.Header.Set("Authorization", "Bearer "+tok)
	return t.base.RoundTrip(again)
}

// replayable reports whether req's body can be sent twice, reading a small
// one (up to maxReplayBody) into memory; a larger one streams as it comes,
// its first bytes put back in front.
func replayable(req *http.Request) (bool, error) {
	if req.Body == nil || req.Body == http.NoBody {
		return true, nil
	}
	if req.ContentLength > maxReplayBody {
		return false, nil
	}
	orig := req.Body
	buf, err := io.ReadAll(io.LimitReader(orig, maxReplayBody+1))
	if err != nil {
		return false, err
	}
	if len(buf) > maxReplayBody {
		req.Body = struct {
			io.Reader
			io.Closer
		}{io.MultiReader(bytes.NewReader(buf), orig), orig}
		return false, nil
	}
	orig.Close()
	req.ContentLength, req.TransferEncoding = int64(len(buf)), nil
	req.Body = io.NopCloser(bytes.NewReader(buf))
	req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(buf)), nil }
	return true, nil
}

// retryToken returns a token to retry with after the upstream refused
// pc.token: a newer one already at hand (another caller forced a refresh),
// or one from a forced refresh, which the refresh limit lets through as it
// does POST /v1/tokens/{name}/refresh.
func (s *Server) retryToken(ctx context.Context, pc *proxyCall) (string, bool) {
	if h, err := s.b.Token(ctx, pc.name); err == nil && h.AccessToken.Reveal() != pc.token {
		return h.AccessToken.Reveal(), true
	}
	if ok, _ := s.limits.allowRefresh(pc.name, pc.uid, time.Now()); !ok {
		s.log.Warn("proxy: the upstream refused the token, and a forced refresh is not allowed yet; passing on its 401", "credential", pc.name)
		return "", false
	}
	if err := s.b.Refresh(ctx, pc.name); err != nil {
		s.log.Warn("proxy: the upstream refused the token, and the forced refresh failed; passing on its 401", "credential", pc.name, "err", err)
		return "", false
	}
	h, err := s.b.Token(ctx, pc.name)
	if err != nil || h.AccessToken.Reveal() == pc.token {
		return "", false
	}
	return h.AccessToken.Reveal(), true
}

// proxyResponse notes the upstream's status and drops any answer header
// that repeats the token (an upstream that echoes request headers).
func (s *Server) proxyResponse(resp *http.Response) error {
	pc := callOf(resp.Request.Context())
	pc.status = resp.StatusCode
	if pc.token == "" {
		return nil // never: a handout is never empty; "" would match every header
	}
	for k, vs := range resp.Header {
		for _, v := range vs {
			if strings.Contains(v, pc.token) {
				delete(resp.Header, k)
				s.log.Warn("proxy: dropped an upstream answer header that repeats the token", "credential", pc.name, "header", k)
				break
			}
		}
	}
	return nil
}

// proxyError answers when no upstream answer came.
func (s *Server) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	pc := callOf(r.Context())
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err // the URL may hold the caller's query string
	}
	pc.errMsg = err.Error()
	if r.Context().Err() == context.Canceled {
		s.log.Debug("proxy: the caller went away", "credential", pc.name)
		return
	}
	status, code := http.StatusBadGateway, "upstream_unreachable"
	if errors.Is(err, context.DeadlineExceeded) || isTimeout(err) {
		status, code = http.StatusGatewayTimeout, "upstream_timeout"
	}
	s.log.Warn("proxy: no answer from the upstream", "credential", pc.name, "upstream", pc.target.Host, "err", err)
	writeError(w, status, code, fmt.Sprintf(
		"credential %q: the upstream %s did not answer: %v; check that it is up and that TOKENBROKER_%s_UPSTREAM names it",
		pc.name, pc.target.Host, err, envName(pc.name)))
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// proxy answers /v1/proxy/{name}/{path...}, any method.
func (s *Server) proxy(w http.ResponseWriter, r *http.Request) {
	// The name and path as the caller escaped them: a decoded path would
	// hide %2F and %2E from the checks.
	raw := strings.TrimPrefix(r.URL.EscapedPath(), proxyPrefix)
	name, rest := raw, ""
	if i := strings.IndexByte(raw, '/'); i >= 0 {
		name, rest = raw[:i], raw[i:]
	}
	if !validName(name) {
		invalidName(w, name)
		return
	}
	switch {
	case r.URL.IsAbs() || r.URL.Host != "" || !strings.HasPrefix(r.RequestURI, "/"):
		writeError(w, http.StatusBadRequest, "absolute_form", fmt.Sprintf(
			"credential %q: the request names a host (absolute-form target); send the path only, /v1/proxy/%s/...: the proxy only ever reaches the configured upstream", name, name))
		return
	case r.Method == http.MethodConnect || r.Method == http.MethodTrace:
		w.Header().Set("Allow", "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS")
		writeError(w, http.StatusMethodNotAllowed, "method_not_allowed",
			"the proxy does not tunnel (CONNECT) or echo requests back (TRACE, which would repeat the token)")
		return
	}
	if !s.allowed(w, r, name, "call its upstream through the proxy") {
		return
	}
	route := s.proxies[name]
	if route == nil {
		if !s.knows(name) {
			s.brokerError(w, name, fmt.Errorf("%w %q", broker.ErrUnknownCredential, name), false)
			return
		}
		writeError(w, http.StatusNotFound, "no_upstream", fmt.Sprintf(
			"credential %q has no upstream to proxy to; the operator sets TOKENBROKER_%s_UPSTREAM to the API's https:// origin (with an optional path prefix)",
			name, envName(name)))
		return
	}
	p, err := upstreamPath(strings.TrimRight(route.target.EscapedPath(), "/"), rest)
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_path", fmt.Sprintf(
			"credential %q: %v; the proxy forwards only paths under the upstream's own, as they are", name, err))
		return
	}
	h, err := s.b.Token(r.Context(), name)
	if err != nil {
		s.metrics.proxied(name, "no_token")
		s.brokerError(w, name, err, false)
		return
	}
	pc := &proxyCall{name: name, target: *route.target, token: h.AccessToken.Reveal(), uid: selfUID}
	setEscapedPath(&pc.target, p)
	if peer := PeerFrom(r.Context()); peer != nil {
		pc.uid = peer.UID
	}
	// Bodies stream both ways, longer than the socket's own timeouts allow
	// a handout, up to the credential's bound.
	deadline := time.Now().Add(route.max)
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(deadline)
	_ = rc.SetWriteDeadline(deadline)
	ctx, cancel := context.WithDeadline(context.WithValue(r.Context(), proxyCallKey{}, pc), deadline)
	defer cancel()
	// No protocol switch: an upgraded connection would escape every bound.
	r.Header.Del("Upgrade")
	start := time.Now()
	defer func() {
		class := "unreachable"
		if pc.status > 0 {
			class = fmt.Sprintf("%dxx", pc.status/100)
		}
		s.metrics.proxied(name, class)
		s.log.LogAttrs(r.Context(), slog.LevelDebug, "proxied",
			slog.String("credential", name), slog.String("method", logSafe(r.Method)),
			slog.Int("upstream_status", pc.status), slog.Bool("retried", pc.retry),
			slog.Duration("duration", time.Since(start)))
	}()
	route.rp.ServeHTTP(w, r.WithContext(ctx))
}

// knows reports whether the broker has a credential named name. Only the
// proxy's error path asks, so it reads the status rather than keep a copy.
func (s *Server) knows(name string) bool {
	return slices.ContainsFunc(s.b.Status(), func(st broker.Status) bool { return st.Name == name })
}
