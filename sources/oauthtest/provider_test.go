package oauthtest

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/internal/tbtest"
)

// clock is a settable clock for Options.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

const callback = "https://app.example/cb"

// setup starts a provider with one client per dialect and one user.
func setup(t *testing.T, opts Options) (*Provider, *clock) {
	t.Helper()
	clk := newClock()
	if opts.Now == nil {
		opts.Now = clk.Now
	}
	p := StartTest(t, opts)
	for _, c := range []Client{
		{ID: "fw-cc", Secret: "fw-secret", Dialect: Firework, Scopes: []string{"videos:read", "videos:write", "livestreams:write"}},
		{ID: "fw-user", Secret: "fwu-secret", Dialect: Firework, RedirectURI: callback},
		{ID: "lp", Secret: "lp-secret", Dialect: Livepush, RedirectURI: callback, Scopes: []string{"streams.read", "streams.write"}},
		{ID: "in", Secret: "in+sec/ret", Dialect: Ingest, RedirectURI: callback, Scopes: []string{"read_videos", "write_videos"}},
		{ID: "vs", Secret: "vs-secret", Dialect: VSRS, RedirectURI: callback},
		{ID: "gen", Secret: "gen secret:+/", Dialect: Generic, RedirectURI: callback, Scopes: []string{"a", "b"}},
		{ID: "pub", Dialect: Generic, Scopes: []string{"a"}},
	} {
		p.AddClient(c)
	}
	p.AddUser("alice", "wonderland")
	return p, clk
}

// call is one raw HTTP request to a token endpoint.
type call struct {
	method  string // default: the dialect's
	dialect Dialect
	path    string // instead of the dialect's token path
	query   url.Values
	form    url.Values
	body    string // raw body, with contentType
	ctype   string
	header  map[string]string
	basic   []string // user, password: sent as given
}

type result struct {
	status int
	header http.Header
	raw    string
	body   map[string]any // nil unless the body is a JSON object
}

func (r result) str(k string) string { s, _ := r.body[k].(string); return s }

func (r result) keys() []string { return slices.Sorted(maps.Keys(r.body)) }

func send(t *testing.T, p *Provider, c call) result {
	t.Helper()
	res, err := trySend(context.Background(), p, c)
	if err != nil {
		t.Fatalf("request: %v", err)
	}
	return res
}

func trySend(ctx context.Context, p *Provider, c call) (result, error) {
	u := p.TokenURL(c.dialect)
	if c.path != "" {
		u = p.URL() + c.path
	}
	if c.query != nil {
		u += "?" + c.query.Encode()
	}
	method := c.method
	if method == "" {
		method = specs[c.dialect].method
	}
	var body io.Reader
	ctype := c.ctype
	switch {
	case c.form != nil:
		body = strings.NewReader(c.form.Encode())
		if ctype == "" {
			ctype = "application/x-www-form-urlencoded"
		}
	case c.body != "":
		body = strings.NewReader(c.body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return result{}, err
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	for k, v := range c.header {
		req.Header.Set(k, v)
	}
	if c.basic != nil {
		req.SetBasicAuth(c.basic[0], c.basic[1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return result{}, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return result{}, err
	}
	res := result{status: resp.StatusCode, header: resp.Header, raw: string(raw)}
	json.Unmarshal(raw, &res.body)
	return res, nil
}

// claims decodes a JWT's payload.
func claims(t *testing.T, tok string) map[string]any {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("access token %q is not a JWT", tok)
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatalf("JWT payload: %v", err)
	}
	var c map[string]any
	if err := json.Unmarshal(payload, &c); err != nil {
		t.Fatalf("JWT payload: %v", err)
	}
	return c
}

// tcase is one request and what must come back.
type tcase struct {
	name   string
	opts   Options
	req    func(p *Provider) call
	status int
	err    string                                      // expected RFC 6749 error code
	check  func(t *testing.T, p *Provider, res result) // more checks on success
}

func runCases(t *testing.T, cases []tcase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, _ := setup(t, tc.opts)
			res := send(t, p, tc.req(p))
			if res.status != tc.status {
				t.Fatalf("status %d, want %d; body %s", res.status, tc.status, res.raw)
			}
			if cc := res.header.Get("Cache-Control"); cc != "no-store" {
				t.Errorf("Cache-Control %q, want no-store", cc)
			}
			if got := res.str("error"); got != tc.err {
				t.Fatalf("error %q, want %q; body %s", got, tc.err, res.raw)
			}
			if tc.err != "" && res.str("error_description") == "" {
				t.Errorf("error answer without error_description: %s", res.raw)
			}
			if tc.check != nil {
				tc.check(t, p, res)
			}
		})
	}
}

func wantKeys(t *testing.T, res result, keys ...string) {
	t.Helper()
	slices.Sort(keys)
	if got := res.keys(); !slices.Equal(got, keys) {
		t.Errorf("answer fields %v, want %v; body %s", got, keys, res.raw)
	}
}

func wantField(t *testing.T, res result, k string, want any) {
	t.Helper()
	if got := res.body[k]; got != want {
		t.Errorf("%s = %#v, want %#v", k, got, want)
	}
}

func vals(kv ...string) url.Values {
	v := url.Values{}
	for i := 0; i < len(kv); i += 2 {
		v.Set(kv[i], kv[i+1])
	}
	return v
}

func fixed(c call) func(*Provider) call { return func(*Provider) call { return c } }

func TestFireworkClientCredentials(t *testing.T) {
	good := vals("grant_type", "client_credentials", "client_id", "fw-cc", "client_secret", "fw-secret", "scope", "videos:write livestreams:write")
	with := func(k, v string) url.Values {
		c := maps.Clone(good)
		if v == "" {
			c.Del(k)
		} else {
			c.Set(k, v)
		}
		return c
	}
	runCases(t, []tcase{
		{name: "form body", req: fixed(call{dialect: Firework, form: good}), status: 200,
			check: func(t *testing.T, p *Provider, res result) {
				wantKeys(t, res, "access_token", "expires_in")
				wantField(t, res, "expires_in", 3600.0)
				c := claims(t, res.str("access_token"))
				wantField(t, result{body: c}, "scope", "videos:write livestreams:write")
				wantField(t, result{body: c}, "bid", "fw-cc")
				if exp, iat := c["exp"].(float64), c["iat"].(float64); exp-iat != 3600 {
					t.Errorf("exp-iat = %v, want 3600", exp-iat)
				}
				if !p.Valid(res.str("access_token")) {
					t.Error("issued token is not Valid")
				}
			}},
		{name: "params in query", req: fixed(call{dialect: Firework, query: good}), status: 400, err: "invalid_request"},
		{name: "params in query and body", req: fixed(call{dialect: Firework, form: good, query: vals("client_id", "fw-cc")}), status: 400, err: "invalid_request"},
		{name: "JSON body", req: fixed(call{dialect: Firework, body: `{"grant_type":"client_credentials"}`, ctype: "application/json"}), status: 400, err: "invalid_request"},
		{name: "no content type", req: fixed(call{dialect: Firework, body: good.Encode()}), status: 400, err: "invalid_request"},
		{name: "missing scope", req: fixed(call{dialect: Firework, form: with("scope", "")}), status: 400, err: "invalid_request"},
		{name: "scope not granted", req: fixed(call{dialect: Firework, form: with("scope", "videos:write api:admin")}), status: 400, err: "invalid_scope"},
		{name: "comma scopes", req: fixed(call{dialect: Firework, form: with("scope", "videos:read,videos:write")}), status: 400, err: "invalid_scope"},
		{name: "wrong secret", req: fixed(call{dialect: Firework, form: with("client_secret", "nope")}), status: 401, err: "invalid_client"},
		{name: "unknown client", req: fixed(call{dialect: Firework, form: with("client_id", "who")}), status: 401, err: "invalid_client"},
		{name: "client of another provider", req: fixed(call{dialect: Firework, form: with("client_id", "lp")}), status: 401, err: "invalid_client"},
		{name: "Basic instead of body", req: fixed(call{dialect: Firework, form: with("client_secret", ""), basic: []string{"fw-cc", "fw-secret"}}), status: 401, err: "invalid_client"},
		{name: "password grant", req: fixed(call{dialect: Firework, form: with("grant_type", "password")}), status: 400, err: "unsupported_grant_type"},
		{name: "no grant_type", req: fixed(call{dialect: Firework, form: with("grant_type", "")}), status: 400, err: "invalid_request"},
		{name: "repeated parameter", req: fixed(call{dialect: Firework, body: good.Encode() + "&scope=videos:read", ctype: "application/x-www-form-urlencoded"}), status: 400, err: "invalid_request"},
		{name: "GET", req: fixed(call{dialect: Firework, method: "GET", query: good}), status: 405, err: "invalid_request"},
	})
}

func TestFireworkUser(t *testing.T) {
	codeQuery := func(p *Provider) url.Values {
		return vals("grant_type", "authorization_code", "client_id", "fw-user", "client_secret", "fwu-secret",
			"code", p.IssueCode("fw-user", callback, nil), "redirect_uri", callback)
	}
	refreshQuery := func(p *Provider) url.Values {
		return vals("grant_type", "refresh_token", "client_id", "fw-user", "refresh_token", p.IssueRefreshToken("fw-user"), "redirect_uri", callback)
	}
	without := func(v url.Values, k string) url.Values { v.Del(k); return v }
	set := func(v url.Values, k, val string) url.Values { v.Set(k, val); return v }
	runCases(t, []tcase{
		{name: "code in query", req: func(p *Provider) call { return call{dialect: Firework, query: codeQuery(p)} }, status: 200,
			check: func(t *testing.T, p *Provider, res result) {
				wantKeys(t, res, "access_token", "refresh_token", "token_type", "scope", "created_at", "refresh_token_expires_in", "token_expires_in")
				wantField(t, res, "token_type", "bearer")
				wantField(t, res, "scope", "openid")
				wantField(t, res, "token_expires_in", 3600.0)
				wantField(t, res, "refresh_token_expires_in", 600000.0)
				wantField(t, res, "created_at", "2026-03-01T12:00:00Z")
				wantField(t, result{body: claims(t, res.str("access_token"))}, "scope", "openid")
			}},
		{name: "refresh without secret", req: func(p *Provider) call { return call{dialect: Firework, query: refreshQuery(p)} }, status: 200,
			check: func(t *testing.T, p *Provider, res result) {
				wantKeys(t, res, "access_token", "refresh_token", "token_type", "scope", "created_at", "refresh_token_expires_in", "token_expires_in")
			}},
		{name: "refresh with a secret it ignores", req: func(p *Provider) call {
			return call{dialect: Firework, query: set(refreshQuery(p), "client_secret", "whatever")}
		}, status: 200},
		{name: "refresh without redirect_uri", req: func(p *Provider) call {
			return call{dialect: Firework, query: without(refreshQuery(p), "redirect_uri")}
		}, status: 400, err: "invalid_request"},
		{name: "refresh with another redirect_uri", req: func(p *Provider) call {
			return call{dialect: Firework, query: set(refreshQuery(p), "redirect_uri", "https://evil.example/cb")}
		}, status: 400, err: "invalid_grant"},
		{name: "refresh in the body", req: func(p *Provider) call { return call{dialect: Firework, form: refreshQuery(p)} }, status: 400, err: "invalid_request"},
		{name: "code in the body", req: func(p *Provider) call { return call{dialect: Firework, form: codeQuery(p)} }, status: 400, err: "invalid_request"},
		{name: "code without secret", req: func(p *Provider) call {
			return call{dialect: Firework, query: without(codeQuery(p), "client_secret")}
		}, status: 401, err: "invalid_client"},
		{name: "code without redirect_uri", req: func(p *Provider) call {
			return call{dialect: Firework, query: without(codeQuery(p), "redirect_uri")}
		}, status: 400, err: "invalid_request"},
		{name: "unknown code", req: func(p *Provider) call { return call{dialect: Firework, query: set(codeQuery(p), "code", "nope")} }, status: 400, err: "invalid_grant"},
		{name: "unknown refresh token", req: func(p *Provider) call {
			return call{dialect: Firework, query: set(refreshQuery(p), "refresh_token", "nope")}
		}, status: 400, err: "invalid_grant"},
		{name: "another client's refresh token", req: func(p *Provider) call {
			p.AddClient(Client{ID: "fw-user2", Dialect: Firework, RedirectURI: callback})
			return call{dialect: Firework, query: set(refreshQuery(p), "client_id", "fw-user2")}
		}, status: 400, err: "invalid_grant"},
		{name: "client_credentials in query", req: fixed(call{dialect: Firework,
			query: vals("grant_type", "client_credentials", "client_id", "fw-cc", "client_secret", "fw-secret", "scope", "videos:read")}),
			status: 400, err: "invalid_request"},
	})
}

func TestLivepush(t *testing.T) {
	codeQuery := func(p *Provider) url.Values {
		return vals("grant_type", "authorization_code", "client_id", "lp", "client_secret", "lp-secret",
			"code", p.IssueCode("lp", callback, []string{"streams.read"}), "redirect_uri", callback)
	}
	refreshQuery := func(p *Provider) url.Values {
		return vals("grant_type", "refresh_token", "client_id", "lp", "client_secret", "lp-secret", "refresh_token", p.IssueRefreshToken("lp"))
	}
	runCases(t, []tcase{
		{name: "code by GET", req: func(p *Provider) call { return call{dialect: Livepush, query: codeQuery(p)} }, status: 200,
			check: func(t *testing.T, p *Provider, res result) {
				wantKeys(t, res, "access_token", "refresh_token", "token_type", "expires_in")
				wantField(t, res, "token_type", "access_token")
				wantField(t, res, "expires_in", 3600.0)
				if strings.Contains(res.str("access_token"), ".") {
					t.Errorf("access token %q should be opaque", res.str("access_token"))
				}
			}},
		{name: "refresh omits the refresh token", req: func(p *Provider) call { return call{dialect: Livepush, query: refreshQuery(p)} }, status: 200,
			check: func(t *testing.T, p *Provider, res result) {
				wantKeys(t, res, "access_token", "token_type", "expires_in")
			}},
		{name: "POST", req: func(p *Provider) call { return call{dialect: Livepush, method: "POST", form: refreshQuery(p)} }, status: 405, err: "invalid_request",
			check: func(t *testing.T, p *Provider, res result) {
				if a := res.header.Get("Allow"); a != "GET" {
					t.Errorf("Allow %q, want GET", a)
				}
			}},
		{name: "refresh without secret", req: func(p *Provider) call {
			q := refreshQuery(p)
			q.Del("client_secret")
			return call{dialect: Livepush, query: q}
		}, status: 401, err: "invalid_client"},
		{name: "client_credentials", req: fixed(call{dialect: Livepush, query: vals("grant_type", "client_credentials", "client_id", "lp", "client_secret", "lp-secret")}),
			status: 400, err: "unsupported_grant_type"},
	})
}

func TestIngest(t *testing.T) {
	accept := map[string]string{"Accept": "application/vnd.ingest.v1+json"}
	cc := func(scope string) url.Values { return vals("grant_type", "client_credentials", "scope", scope) }
	basic := []string{"in", url.QueryEscape("in+sec/ret")}
	refresh := func(p *Provider, scope string) call {
		q := vals("grant_type", "refresh_token", "refresh_token", p.IssueRefreshToken("in"))
		if scope != "" {
			q.Set("scope", scope)
		}
		return call{dialect: Ingest, form: q, basic: basic, header: accept}
	}
	runCases(t, []tcase{
		{name: "client_credentials, Basic, query", req: fixed(call{dialect: Ingest, query: cc("read_videos,write_videos"), basic: basic, header: accept}), status: 200,
			check: func(t *testing.T, p *Provider, res result) {
				wantKeys(t, res, "access_token", "token_type", "expires_in", "scope")
				wantField(t, res, "expires_in", "3600")
				wantField(t, res, "token_type", "Bearer")
				wantField(t, res, "scope", "read_videos,write_videos")
				c := claims(t, res.str("access_token"))
				wantField(t, result{body: c}, "sub", "in")
				if exp, iat := c["exp"].(float64), c["iat"].(float64); exp-iat != 3600 {
					t.Errorf("exp-iat = %v, want 3600", exp-iat)
				}
			}},
		{name: "Basic not form-encoded", req: fixed(call{dialect: Ingest, form: cc("read_videos"), basic: []string{"in", "in+sec/ret"}, header: accept}), status: 200},
		{name: "client_credentials, params in body", req: func(p *Provider) call {
			f := cc("read_videos")
			f.Set("client_id", "in")
			f.Set("client_secret", "in+sec/ret")
			return call{dialect: Ingest, form: f, header: accept}
		}, status: 200},
		{name: "params split between query and body", req: fixed(call{dialect: Ingest, query: vals("grant_type", "client_credentials"),
			form: vals("scope", "read_videos", "client_id", "in", "client_secret", "in+sec/ret"), header: accept}), status: 200},
		{name: "Accept among others", req: fixed(call{dialect: Ingest, query: cc("read_videos"), basic: basic,
			header: map[string]string{"Accept": "application/json, application/vnd.ingest.v1+json;q=0.9"}}), status: 200},
		{name: "no Accept", req: fixed(call{dialect: Ingest, query: cc("read_videos"), basic: basic}), status: 406, err: "invalid_request"},
		{name: "Accept JSON", req: fixed(call{dialect: Ingest, query: cc("read_videos"), basic: basic, header: map[string]string{"Accept": "application/json"}}),
			status: 406, err: "invalid_request"},
		{name: "space scopes", req: fixed(call{dialect: Ingest, query: cc("read_videos write_videos"), basic: basic, header: accept}), status: 400, err: "invalid_scope"},
		{name: "no scope", req: fixed(call{dialect: Ingest, query: vals("grant_type", "client_credentials"), basic: basic, header: accept}), status: 400, err: "invalid_request"},
		{name: "Basic and client_secret", req: fixed(call{dialect: Ingest, query: vals("grant_type", "client_credentials", "scope", "read_videos", "client_secret", "in+sec/ret"),
			basic: basic, header: accept}), status: 400, err: "invalid_request"},
		{name: "wrong Basic secret", req: fixed(call{dialect: Ingest, query: cc("read_videos"), basic: []string{"in", "x"}, header: accept}), status: 401, err: "invalid_client",
			check: func(t *testing.T, p *Provider, res result) {
				if res.header.Get("WWW-Authenticate") == "" {
					t.Error("401 after Basic without WWW-Authenticate")
				}
			}},
		{name: "same parameter in query and body", req: fixed(call{dialect: Ingest, query: cc("read_videos"), form: vals("scope", "read_videos"), basic: basic, header: accept}),
			status: 400, err: "invalid_request"},
		{name: "refresh keeps scope", req: func(p *Provider) call { return refresh(p, "") }, status: 200,
			check: func(t *testing.T, p *Provider, res result) {
				wantKeys(t, res, "access_token", "token_type", "expires_in", "scope", "refresh_token")
				wantField(t, res, "scope", "read_videos,write_videos")
			}},
		{name: "refresh narrows scope", req: func(p *Provider) call { return refresh(p, "read_videos") }, status: 200,
			check: func(t *testing.T, p *Provider, res result) { wantField(t, res, "scope", "read_videos") }},
		{name: "refresh widens scope", req: func(p *Provider) call { return refresh(p, "read_videos,admin") }, status: 400, err: "invalid_scope"},
		{name: "code with another redirect_uri", req: func(p *Provider) call {
			return call{dialect: Ingest, basic: basic, header: accept,
				form: vals("grant_type", "authorization_code", "code", p.IssueCode("in", "", []string{"read_videos"}), "redirect_uri", "https://evil.example/")}
		}, status: 400, err: "invalid_grant"},
		{name: "code narrows scope", req: func(p *Provider) call {
			return call{dialect: Ingest, basic: basic, header: accept,
				form: vals("grant_type", "authorization_code", "code", p.IssueCode("in", callback, []string{"read_videos", "write_videos"}), "redirect_uri", callback, "scope", "write_videos")}
		}, status: 200, check: func(t *testing.T, p *Provider, res result) {
			wantField(t, res, "scope", "write_videos")
			if sub := claims(t, res.str("access_token"))["sub"].(string); len(sub) != 36 {
				t.Errorf("sub %q is not a UUID", sub)
			}
		}},
	})
}

func TestVSRS(t *testing.T) {
	pw := func(user, pass string) url.Values {
		return vals("grant_type", "password", "client_id", "vs", "client_secret", "vs-secret", "username", user, "password", pass)
	}
	runCases(t, []tcase{
		{name: "password", req: fixed(call{dialect: VSRS, form: pw("alice", "wonderland")}), status: 200,
			check: func(t *testing.T, p *Provider, res result) {
				wantKeys(t, res, "token_type", "expires_in", "access_token", "refresh_token")
				wantField(t, res, "token_type", "Bearer")
				wantField(t, res, "expires_in", 3600.0)
			}},
		{name: "wrong password", req: fixed(call{dialect: VSRS, form: pw("alice", "x")}), status: 400, err: "invalid_grant"},
		{name: "unknown user", req: fixed(call{dialect: VSRS, form: pw("bob", "wonderland")}), status: 400, err: "invalid_grant"},
		{name: "no password", req: fixed(call{dialect: VSRS, form: vals("grant_type", "password", "client_id", "vs", "client_secret", "vs-secret", "username", "alice")}),
			status: 400, err: "invalid_request"},
		{name: "params in query", req: fixed(call{dialect: VSRS, query: pw("alice", "wonderland")}), status: 400, err: "invalid_request"},
		{name: "secret in the URL", req: func(p *Provider) call {
			f := pw("alice", "wonderland")
			f.Del("client_secret")
			return call{dialect: VSRS, form: f, query: vals("client_secret", "vs-secret")}
		}, status: 400, err: "invalid_request"},
		{name: "Basic auth", req: fixed(call{dialect: VSRS, basic: []string{"vs", "vs-secret"},
			form: vals("grant_type", "password", "username", "alice", "password", "wonderland")}), status: 401, err: "invalid_client"},
		{name: "refresh omits the refresh token", req: func(p *Provider) call {
			return call{dialect: VSRS, form: vals("grant_type", "refresh_token", "client_id", "vs", "client_secret", "vs-secret", "refresh_token", p.IssueRefreshToken("vs"))}
		}, status: 200, check: func(t *testing.T, p *Provider, res result) {
			wantKeys(t, res, "token_type", "expires_in", "access_token")
		}},
		{name: "client_credentials", req: fixed(call{dialect: VSRS, form: vals("grant_type", "client_credentials", "client_id", "vs", "client_secret", "vs-secret")}),
			status: 400, err: "unsupported_grant_type"},
	})
}

func TestGeneric(t *testing.T) {
	basic := []string{"gen", url.QueryEscape("gen secret:+/")}
	runCases(t, []tcase{
		{name: "client_credentials, Basic", req: fixed(call{dialect: Generic, basic: basic, form: vals("grant_type", "client_credentials")}), status: 200,
			check: func(t *testing.T, p *Provider, res result) {
				wantKeys(t, res, "access_token", "token_type", "expires_in", "scope")
				wantField(t, res, "scope", "a b")
				wantField(t, res, "token_type", "Bearer")
			}},
		{name: "client_credentials, body", req: fixed(call{dialect: Generic, form: vals("grant_type", "client_credentials", "client_id", "gen", "client_secret", "gen secret:+/", "scope", "b")}),
			status: 200, check: func(t *testing.T, p *Provider, res result) { wantField(t, res, "scope", "b") }},
		{name: "public client", req: fixed(call{dialect: Generic, form: vals("grant_type", "client_credentials", "client_id", "pub")}), status: 200},
		{name: "password", req: fixed(call{dialect: Generic, basic: basic, form: vals("grant_type", "password", "username", "alice", "password", "wonderland")}), status: 200,
			check: func(t *testing.T, p *Provider, res result) {
				wantKeys(t, res, "access_token", "token_type", "expires_in", "scope", "refresh_token")
			}},
		{name: "refresh", req: func(p *Provider) call {
			return call{dialect: Generic, basic: basic, form: vals("grant_type", "refresh_token", "refresh_token", p.IssueRefreshToken("gen"), "scope", "a")}
		}, status: 200, check: func(t *testing.T, p *Provider, res result) {
			wantKeys(t, res, "access_token", "token_type", "expires_in", "scope")
			wantField(t, res, "scope", "a")
		}},
		{name: "wrong secret", req: fixed(call{dialect: Generic, basic: []string{"gen", "x"}, form: vals("grant_type", "client_credentials")}), status: 401, err: "invalid_client"},
		{name: "no client", req: fixed(call{dialect: Generic, form: vals("grant_type", "client_credentials")}), status: 401, err: "invalid_client"},
		{name: "unknown grant", req: fixed(call{dialect: Generic, basic: basic, form: vals("grant_type", "urn:ietf:params:oauth:grant-type:device_code")}), status: 400, err: "unsupported_grant_type"},
		{name: "unknown path", req: fixed(call{path: "/generic/oauth/token", method: "POST"}), status: 404, err: "invalid_request"},
		{name: "PUT", req: fixed(call{dialect: Generic, method: "PUT"}), status: 405, err: "invalid_request"},
	})
}

// refreshCall builds a correct refresh request for each dialect's client.
func refreshCall(d Dialect, rt string) call {
	switch d {
	case Firework:
		return call{dialect: d, query: vals("grant_type", "refresh_token", "client_id", "fw-user", "refresh_token", rt, "redirect_uri", callback)}
	case Livepush:
		return call{dialect: d, query: vals("grant_type", "refresh_token", "client_id", "lp", "client_secret", "lp-secret", "refresh_token", rt)}
	case Ingest:
		return call{dialect: d, query: vals("grant_type", "refresh_token", "client_id", "in", "client_secret", "in+sec/ret", "refresh_token", rt),
			header: map[string]string{"Accept": "application/vnd.ingest.v1+json"}}
	case VSRS:
		return call{dialect: d, form: vals("grant_type", "refresh_token", "client_id", "vs", "client_secret", "vs-secret", "refresh_token", rt)}
	default:
		return call{dialect: d, form: vals("grant_type", "refresh_token", "client_id", "gen", "client_secret", "gen secret:+/", "refresh_token", rt)}
	}
}

var clientOf = map[Dialect]string{Firework: "fw-user", Livepush: "lp", Ingest: "in", VSRS: "vs", Generic: "gen"}

func TestRotationReuseRevokesFamily(t *testing.T) {
	for _, d := range Dialects() {
		t.Run(string(d), func(t *testing.T) {
			p, _ := setup(t, Options{Rotate: true})
			refresh := func(rt string) result { t.Helper(); return send(t, p, refreshCall(d, rt)) }
			rt0, other := p.IssueRefreshToken(clientOf[d]), p.IssueRefreshToken(clientOf[d])

			r1 := refresh(rt0)
			rt1 := r1.str("refresh_token")
			if r1.status != 200 || rt1 == "" || rt1 == rt0 {
				t.Fatalf("first refresh: status %d, refresh token %q (was %q); want 200 and a new one", r1.status, rt1, rt0)
			}
			r2 := refresh(rt1)
			rt2 := r2.str("refresh_token")
			if r2.status != 200 || rt2 == "" || rt2 == rt1 {
				t.Fatalf("second refresh: status %d, refresh token %q; want 200 and a new one", r2.status, rt2)
			}
			if !p.Valid(r1.str("access_token")) || !p.Valid(r2.str("access_token")) {
				t.Fatal("access tokens not valid before the reuse")
			}

			if r := refresh(rt0); r.status != 400 || r.str("error") != "invalid_grant" {
				t.Fatalf("reuse of a rotated token: %d %s, want 400 invalid_grant", r.status, r.raw)
			}
			if got := p.Stats().ReuseEvents; got != 1 {
				t.Errorf("ReuseEvents = %d, want 1", got)
			}
			// rt0's successor rt1 was presented: a copy in live hands.
			if rs := p.Reuses(); len(rs) != 1 || !rs[0].SuccessorPresented || rs[0].ClientID != clientOf[d] || rs[0].SpentAt.IsZero() {
				t.Errorf("Reuses() = %+v; want one, of %s, spent at a time, successor presented", rs, clientOf[d])
			}
			r3 := refresh(other) // spent, and its successor never offered: lost with a crashed client
			if r := refresh(other); r.status != 400 || r3.status != 200 {
				t.Fatalf("second grant: %d then %d, want 200 then 400", r3.status, r.status)
			}
			if rs := p.Reuses(); len(rs) != 2 || rs[1].SuccessorPresented {
				t.Errorf("Reuses() = %+v; want a second event whose successor was never presented", rs)
			}
			other = p.IssueRefreshToken(clientOf[d])
			if r := refresh(rt2); r.status != 400 || r.str("error") != "invalid_grant" {
				t.Errorf("newest token after reuse: %d %s, want 400 invalid_grant (family revoked)", r.status, r.raw)
			}
			for _, at := range []string{r1.str("access_token"), r2.str("access_token")} {
				if p.Valid(at) {
					t.Errorf("access token of the revoked family is still valid")
				}
			}
			if r := refresh(other); r.status != 200 {
				t.Errorf("another grant of the same client: %d %s, want 200", r.status, r.raw)
			}
			if got := p.Stats().ReuseEvents; got != 2 {
				t.Errorf("ReuseEvents = %d after the revoked family was tried again, want 2", got)
			}
		})
	}
}

func TestWithoutRotation(t *testing.T) {
	repeats := map[Dialect]bool{Firework: true, Ingest: true}
	for _, d := range Dialects() {
		t.Run(string(d), func(t *testing.T) {
			p, _ := setup(t, Options{})
			rt := p.IssueRefreshToken(clientOf[d])
			for i := range 3 {
				r := send(t, p, refreshCall(d, rt))
				if r.status != 200 {
					t.Fatalf("refresh %d: %d %s", i, r.status, r.raw)
				}
				got, has := r.body["refresh_token"]
				if repeats[d] && got != rt {
					t.Errorf("refresh_token = %v, want the same %q repeated", got, rt)
				}
				if !repeats[d] && has {
					t.Errorf("refresh_token %v in the answer, want none", got)
				}
			}
			if s := p.Stats(); s.Refreshes != 3 || s.ReuseEvents != 0 {
				t.Errorf("Refreshes %d ReuseEvents %d, want 3 and 0", s.Refreshes, s.ReuseEvents)
			}
		})
	}
}

func TestExpiry(t *testing.T) {
	t.Run("access and refresh", func(t *testing.T) {
		p, clk := setup(t, Options{AccessLifetime: time.Hour, RefreshLifetime: 24 * time.Hour})
		rt := p.IssueRefreshToken("gen")
		r := send(t, p, refreshCall(Generic, rt))
		at := r.str("access_token")
		clk.Advance(time.Hour - time.Second)
		if !p.Valid(at) {
			t.Error("access token invalid 1s before expiry")
		}
		clk.Advance(time.Second)
		if p.Valid(at) {
			t.Error("access token valid at expiry")
		}
		clk.Advance(22*time.Hour + 59*time.Minute)
		if r := send(t, p, refreshCall(Generic, rt)); r.status != 200 {
			t.Fatalf("refresh 1 min before the refresh token expires: %d %s", r.status, r.raw)
		}
		clk.Advance(time.Minute)
		if r := send(t, p, refreshCall(Generic, rt)); r.status != 400 || r.str("error") != "invalid_grant" {
			t.Fatalf("expired refresh token: %d %s, want 400 invalid_grant", r.status, r.raw)
		}
	})
	t.Run("firework default 600000s", func(t *testing.T) {
		p, clk := setup(t, Options{})
		rt := p.IssueRefreshToken("fw-user")
		clk.Advance(100000 * time.Second)
		r := send(t, p, refreshCall(Firework, rt))
		wantField(t, r, "refresh_token_expires_in", 500000.0)
		clk.Advance(500000 * time.Second)
		if r := send(t, p, refreshCall(Firework, rt)); r.str("error") != "invalid_grant" {
			t.Fatalf("after 600000s: %d %s, want invalid_grant", r.status, r.raw)
		}
	})
	t.Run("rotated tokens get a fresh lifetime", func(t *testing.T) {
		p, clk := setup(t, Options{Rotate: true, RefreshLifetime: time.Hour})
		rt := p.IssueRefreshToken("vs")
		for i := range 3 {
			clk.Advance(50 * time.Minute)
			r := send(t, p, refreshCall(VSRS, rt))
			if r.status != 200 {
				t.Fatalf("refresh %d: %d %s", i, r.status, r.raw)
			}
			rt = r.str("refresh_token")
		}
	})
	t.Run("code", func(t *testing.T) {
		p, clk := setup(t, Options{})
		code := p.IssueCode("gen", "", nil)
		clk.Advance(codeLifetime)
		r := send(t, p, call{dialect: Generic, basic: []string{"gen", "gen secret:+/"}, form: vals("grant_type", "authorization_code", "code", code)})
		if r.str("error") != "invalid_grant" {
			t.Fatalf("expired code: %d %s, want invalid_grant", r.status, r.raw)
		}
	})
}

func TestCodeIsOneTime(t *testing.T) {
	p, _ := setup(t, Options{})
	code := p.IssueCode("vs", callback, nil)
	exchange := func() result {
		return send(t, p, call{dialect: VSRS, form: vals("grant_type", "authorization_code", "client_id", "vs", "client_secret", "vs-secret",
			"code", code, "redirect_uri", callback)})
	}
	first := exchange()
	if first.status != 200 {
		t.Fatalf("first exchange: %d %s", first.status, first.raw)
	}
	if r := exchange(); r.str("error") != "invalid_grant" {
		t.Fatalf("second exchange: %d %s, want invalid_grant", r.status, r.raw)
	}
	if p.Valid(first.str("access_token")) {
		t.Error("the replayed code's access token is still valid")
	}
	if r := send(t, p, refreshCall(VSRS, first.str("refresh_token"))); r.str("error") != "invalid_grant" {
		t.Errorf("the replayed code's refresh token: %d %s, want invalid_grant", r.status, r.raw)
	}
	// A code issued with a redirect_uri needs it repeated.
	code = p.IssueCode("vs", callback, nil)
	r := send(t, p, call{dialect: VSRS, form: vals("grant_type", "authorization_code", "client_id", "vs", "client_secret", "vs-secret", "code", code)})
	if r.str("error") != "invalid_grant" {
		t.Errorf("code without its redirect_uri: %d %s, want invalid_grant", r.status, r.raw)
	}
}

func TestRevoke(t *testing.T) {
	p, _ := setup(t, Options{})
	rt := p.IssueRefreshToken("gen")
	at := send(t, p, refreshCall(Generic, rt)).str("access_token")
	if !p.Revoke(at) || p.Revoke("nope") {
		t.Fatal("Revoke reported the wrong thing")
	}
	if r := send(t, p, refreshCall(Generic, rt)); r.str("error") != "invalid_grant" {
		t.Errorf("refresh after revocation: %d %s, want invalid_grant", r.status, r.raw)
	}
}

func TestAuthorize(t *testing.T) {
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	authorize := func(t *testing.T, p *Provider, d Dialect, q url.Values) (int, url.Values) {
		t.Helper()
		resp, err := noFollow.Get(p.AuthorizeURL(d) + "?" + q.Encode())
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		loc, err := url.Parse(resp.Header.Get("Location"))
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode < 300 || resp.StatusCode > 399 {
			return resp.StatusCode, nil
		}
		if base := loc.Scheme + "://" + loc.Host + loc.Path; base != callback {
			t.Errorf("redirected to %s, want %s", base, callback)
		}
		return resp.StatusCode, loc.Query()
	}
	p, _ := setup(t, Options{})

	status, back := authorize(t, p, Firework, vals("response_type", "code", "client_id", "fw-user", "redirect_uri", callback, "state", "xyz", "scope", "openid"))
	if status != 301 || back.Get("state") != "xyz" || back.Get("code") == "" {
		t.Fatalf("firework authorize: %d %v, want 301 with code and state xyz", status, back)
	}
	r := send(t, p, call{dialect: Firework, query: vals("grant_type", "authorization_code", "client_id", "fw-user", "client_secret", "fwu-secret",
		"code", back.Get("code"), "redirect_uri", callback)})
	if r.status != 200 {
		t.Fatalf("firework code exchange: %d %s", r.status, r.raw)
	}

	if _, back = authorize(t, p, Firework, vals("response_type", "code", "client_id", "fw-user", "state", "s", "scope", "profile")); back.Get("error") != "invalid_scope" || back.Get("state") != "s" {
		t.Errorf("firework scope profile: %v, want error invalid_scope and state", back)
	}
	if status, _ = authorize(t, p, Firework, vals("response_type", "code", "client_id", "fw-user", "redirect_uri", "https://evil.example/")); status != 400 {
		t.Errorf("foreign redirect_uri: status %d, want 400 without redirect", status)
	}
	if status, _ = authorize(t, p, Livepush, vals("response_type", "code", "client_id", "fw-user")); status != 400 {
		t.Errorf("client of another provider: status %d, want 400", status)
	}

	// Ingest with PKCE S256 and comma scopes.
	verifier := "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
	challenge := "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM" // RFC 7636 appendix B
	q := vals("response_type", "code", "client_id", "in", "scope", "read_videos,write_videos", "code_challenge", challenge, "code_challenge_method", "S256")
	exchange := func(code, verifier string) result {
		f := vals("grant_type", "authorization_code", "code", code)
		if verifier != "" {
			f.Set("code_verifier", verifier)
		}
		return send(t, p, call{dialect: Ingest, form: f, basic: []string{"in", "in+sec/ret"}, header: map[string]string{"Accept": "application/vnd.ingest.v1+json"}})
	}
	status, back = authorize(t, p, Ingest, q)
	if status != 302 || back.Get("code") == "" {
		t.Fatalf("ingest authorize: %d %v", status, back)
	}
	if r := exchange(back.Get("code"), "wrong"); r.str("error") != "invalid_grant" {
		t.Errorf("wrong code_verifier: %d %s, want invalid_grant", r.status, r.raw)
	}
	_, back = authorize(t, p, Ingest, q)
	if r := exchange(back.Get("code"), verifier); r.status != 200 || r.str("scope") != "read_videos,write_videos" {
		t.Errorf("right code_verifier: %d %s, want 200 with both scopes", r.status, r.raw)
	}
	if _, back = authorize(t, p, Ingest, vals("response_type", "code", "client_id", "in")); back.Get("error") != "invalid_scope" {
		t.Errorf("ingest without scope: %v, want error invalid_scope", back)
	}
}

func TestFaults(t *testing.T) {
	gen := func(p *Provider) call {
		return call{dialect: Generic, form: vals("grant_type", "client_credentials", "client_id", "gen", "client_secret", "gen secret:+/")}
	}
	cases := []struct {
		name  string
		fault Fault
		req   func(p *Provider) call
		check func(t *testing.T, r result)
	}{
		{"503 with Retry-After", Fault{Status: 503, RetryAfter: "7"}, gen, func(t *testing.T, r result) {
			if r.status != 503 || r.header.Get("Retry-After") != "7" || r.body != nil {
				t.Errorf("got %d Retry-After %q body %q, want 503, 7, not JSON", r.status, r.header.Get("Retry-After"), r.raw)
			}
		}},
		{"OAuth error with status", Fault{OAuthError: "temporarily_unavailable", Status: 503}, gen, func(t *testing.T, r result) {
			if r.status != 503 || r.str("error") != "temporarily_unavailable" {
				t.Errorf("got %d %s, want 503 temporarily_unavailable", r.status, r.raw)
			}
		}},
		{"OAuth error default status", Fault{OAuthError: "invalid_grant"}, gen, func(t *testing.T, r result) {
			if r.status != 400 || r.str("error") != "invalid_grant" {
				t.Errorf("got %d %s, want 400 invalid_grant", r.status, r.raw)
			}
		}},
		{"invalid_client is 401", Fault{OAuthError: "invalid_client"}, gen, func(t *testing.T, r result) {
			if r.status != 401 {
				t.Errorf("got %d, want 401", r.status)
			}
		}},
		{"HTML", Fault{Status: 502, Body: "<html>oops</html>", BodySet: true, ContentType: "text/html"}, gen, func(t *testing.T, r result) {
			if r.status != 502 || r.raw != "<html>oops</html>" || r.header.Get("Content-Type") != "text/html" {
				t.Errorf("got %d %q %q", r.status, r.header.Get("Content-Type"), r.raw)
			}
		}},
		{"empty 200", Fault{BodySet: true}, gen, func(t *testing.T, r result) {
			if r.status != 200 || r.raw != "" {
				t.Errorf("got %d %q, want 200 and nothing", r.status, r.raw)
			}
		}},
		{"truncated JSON", Fault{Body: `{"access_token":`, BodySet: true}, gen, func(t *testing.T, r result) {
			if r.status != 200 || r.raw != `{"access_token":` {
				t.Errorf("got %d %q", r.status, r.raw)
			}
		}},
		{"expires_in 0", Fault{ExpiresIn: 0}, gen, func(t *testing.T, r result) {
			wantField(t, r, "expires_in", 0.0)
			if r.str("access_token") == "" {
				t.Error("no access token")
			}
		}},
		{"expires_in string", Fault{ExpiresIn: "abc"}, gen, func(t *testing.T, r result) { wantField(t, r, "expires_in", "abc") }},
		{"expires_in huge", Fault{ExpiresIn: 315360000}, gen, func(t *testing.T, r result) { wantField(t, r, "expires_in", 315360000.0) }},
		{"token_expires_in", Fault{ExpiresIn: -5}, func(p *Provider) call { return refreshCall(Firework, p.IssueRefreshToken("fw-user")) },
			func(t *testing.T, r result) {
				wantField(t, r, "token_expires_in", -5.0)
				if _, ok := r.body["expires_in"]; ok {
					t.Error("expires_in added to a Firework user answer")
				}
			}},
		{"short delay", Fault{Delay: 20 * time.Millisecond}, gen, func(t *testing.T, r result) {
			if r.status != 200 {
				t.Errorf("got %d %s", r.status, r.raw)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, _ := setup(t, Options{})
			p.Inject(tc.fault)
			tc.check(t, send(t, p, tc.req(p)))
			if r := send(t, p, tc.req(p)); r.status != 200 || r.body["expires_in"] == nil && r.body["token_expires_in"] == nil {
				t.Errorf("request after the fault: %d %s, want a normal answer", r.status, r.raw)
			}
			if s := p.Stats(); s.Faults != 1 || s.TokenRequests != 2 {
				t.Errorf("Faults %d TokenRequests %d, want 1 and 2", s.Faults, s.TokenRequests)
			}
		})
	}

	t.Run("Times, filters, FIFO", func(t *testing.T) {
		p, _ := setup(t, Options{})
		ingest := call{dialect: Ingest, query: vals("grant_type", "client_credentials", "scope", "read_videos", "client_id", "in", "client_secret", "in+sec/ret"),
			header: map[string]string{"Accept": "application/vnd.ingest.v1+json"}}
		p.Inject(Fault{Dialect: Ingest, Status: 500, Times: 2})
		p.Inject(Fault{ClientID: "pub", Status: 502})
		p.Inject(Fault{Status: 503})
		p.Inject(Fault{Status: 504})
		for i, want := range []struct {
			c      call
			status int
		}{
			{gen(p), 503}, // first fault for any dialect and client
			{ingest, 500}, // Ingest's
			{gen(p), 504}, // the last one left that matches
			{gen(p), 200}, // none left
			{ingest, 500}, // Ingest's second time
			{ingest, 200}, // used up
			{call{dialect: Generic, form: vals("grant_type", "client_credentials", "client_id", "pub")}, 502},
		} {
			if r := send(t, p, want.c); r.status != want.status {
				t.Errorf("request %d: status %d, want %d", i, r.status, want.status)
			}
		}
	})

	t.Run("hangup", func(t *testing.T) {
		p, _ := setup(t, Options{})
		p.Inject(Fault{Hangup: true})
		if _, err := trySend(context.Background(), p, gen(p)); err == nil {
			t.Error("request succeeded; want a transport error")
		}
	})

	t.Run("answer lost after rotation", func(t *testing.T) {
		p, _ := setup(t, Options{Rotate: true})
		rt := p.IssueRefreshToken("gen")
		p.Inject(Fault{Status: 500, AfterProcessing: true})
		if r := send(t, p, refreshCall(Generic, rt)); r.status != 500 {
			t.Fatalf("got %d, want 500", r.status)
		}
		if r := send(t, p, refreshCall(Generic, rt)); r.str("error") != "invalid_grant" {
			t.Fatalf("retry with the spent token: %d %s, want invalid_grant", r.status, r.raw)
		}
		if s := p.Stats(); s.ReuseEvents != 1 || s.Refreshes != 1 {
			t.Errorf("ReuseEvents %d Refreshes %d, want 1 and 1", s.ReuseEvents, s.Refreshes)
		}
	})

	t.Run("delay ends when the client leaves", func(t *testing.T) {
		p, _ := setup(t, Options{})
		p.Inject(Fault{Delay: time.Minute})
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		if _, err := trySend(ctx, p, gen(p)); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err %v, want deadline exceeded", err)
		}
		tbtest.WaitFor(t, 5*time.Second, "the handler to stop sleeping", func() bool { return p.sleeping.Load() == 0 })
	})

	t.Run("a detached delay acts after the client left", func(t *testing.T) {
		p, _ := setup(t, Options{Rotate: true})
		rt := p.IssueRefreshToken("gen")
		p.Inject(Fault{Delay: 200 * time.Millisecond, Detached: true})
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		if _, err := trySend(ctx, p, refreshCall(Generic, rt)); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err %v, want deadline exceeded", err)
		}
		tbtest.WaitFor(t, 5*time.Second, "the provider to act on the request", func() bool { return p.Stats().Refreshes == 1 })
		if r := send(t, p, refreshCall(Generic, rt)); r.str("error") != "invalid_grant" || p.Stats().ReuseEvents != 1 {
			t.Errorf("the token again: %d %s, reuse events %d; want invalid_grant and 1 (it was spent)", r.status, r.raw, p.Stats().ReuseEvents)
		}
	})

	t.Run("Close ends a delay", func(t *testing.T) {
		p, _ := setup(t, Options{})
		p.Inject(Fault{Delay: time.Minute})
		done := make(chan error, 1)
		go func() { _, err := trySend(context.Background(), p, gen(p)); done <- err }()
		tbtest.WaitFor(t, 5*time.Second, "the handler to sleep", func() bool { return p.sleeping.Load() == 1 })
		start := time.Now()
		if err := p.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("Close took %v", d)
		}
		if err := <-done; err == nil {
			t.Error("request succeeded after Close; want an error")
		}
		if err := p.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
		if _, err := trySend(context.Background(), p, gen(p)); err == nil {
			t.Error("request after Close succeeded")
		}
	})
}

func TestStats(t *testing.T) {
	p, _ := setup(t, Options{Rotate: true})
	rt := p.IssueRefreshToken("gen")
	r := send(t, p, refreshCall(Generic, rt))
	send(t, p, refreshCall(Generic, rt)) // reuse
	send(t, p, call{dialect: Generic, form: vals("grant_type", "client_credentials", "client_id", "gen", "client_secret", "gen secret:+/")})
	send(t, p, call{dialect: Generic, form: vals("grant_type", "password", "client_id", "gen", "client_secret", "x")})
	p.Inject(Fault{Status: 500})
	send(t, p, refreshCall(Generic, r.str("refresh_token")))
	got := p.Stats()
	want := Stats{
		TokenRequests: 5, Issued: 2, Refreshes: 1, ReuseEvents: 1, Rejected: 2, Faults: 1,
		ByGrant:  map[string]int{"refresh_token": 3, "client_credentials": 1, "password": 1},
		ByClient: map[string]int{"gen": 5},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("Stats = %+v\nwant    %+v", got, want)
	}
}

func TestConcurrency(t *testing.T) {
	p, _ := setup(t, Options{Rotate: true})
	t.Run("unique tokens", func(t *testing.T) {
		var mu sync.Mutex
		seen := map[string]bool{}
		var wg sync.WaitGroup
		for range 16 {
			wg.Go(func() {
				for range 10 {
					r, err := trySend(context.Background(), p, call{dialect: Generic,
						form: vals("grant_type", "client_credentials", "client_id", "gen", "client_secret", "gen secret:+/")})
					if err != nil || r.status != 200 {
						t.Errorf("status %d err %v", r.status, err)
						return
					}
					mu.Lock()
					seen[r.str("access_token")] = true
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if len(seen) != 160 {
			t.Errorf("%d distinct access tokens, want 160", len(seen))
		}
		for at := range seen {
			if !p.Valid(at) {
				t.Fatal("issued token is not valid")
			}
		}
	})
	t.Run("racing refreshes of one rotating token", func(t *testing.T) {
		rt := p.IssueRefreshToken("gen")
		before := p.Stats().ReuseEvents
		results := make(chan result, 8)
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				r, err := trySend(context.Background(), p, refreshCall(Generic, rt))
				if err != nil {
					t.Error(err)
				}
				results <- r
			})
		}
		wg.Wait()
		close(results)
		var won []string
		for r := range results {
			if r.status == 200 {
				won = append(won, r.str("access_token"))
			} else if r.str("error") != "invalid_grant" {
				t.Errorf("loser got %d %s, want invalid_grant", r.status, r.raw)
			}
		}
		if len(won) != 1 {
			t.Fatalf("%d refreshes won, want exactly 1", len(won))
		}
		if p.Valid(won[0]) {
			t.Error("the winner's token survived the reuse that revoked its family")
		}
		if got := p.Stats().ReuseEvents - before; got != 1 {
			t.Errorf("ReuseEvents grew by %d, want 1", got)
		}
	})
}
