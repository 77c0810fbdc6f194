package api_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/tokenbroker/tokenbroker/internal/tbtest"
	"github.com/tokenbroker/tokenbroker/internal/tbtest/fakebroker"
)

// Authorize is for the broker's own user and root: over the socket as root
// it runs; without the kernel's word on the caller it is refused.
func TestAuthorizeEndpoints(t *testing.T) {
	h := handler(t, fakebroker.New())
	if w := serveHTTP(h, "POST", "/v1/credentials/svc/authorize"); w.Code != http.StatusForbidden {
		t.Errorf("authorize from an unknown caller: %d, want 403", w.Code)
	}
	if os.Geteuid() != 0 {
		t.Skip("the socket half needs root, the one admin every broker accepts")
	}
	sock := tbtest.NewHome(t).Socket
	serve(t, fakebroker.New(), sock)
	c := &http.Client{Transport: &http.Transport{DialContext: func(context.Context, string, string) (net.Conn, error) {
		return net.Dial("unix", sock)
	}}}
	post := func(path, body string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("POST", "http://tokenbroker"+path, strings.NewReader(body))
		req.Header.Set("X-Tokenbroker", "1")
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b strings.Builder
		_, _ = io.Copy(&b, resp.Body)
		return resp.StatusCode, b.String()
	}
	if st, body := post("/v1/credentials/svc/authorize", ""); st != 200 || !strings.Contains(body, `"state":"good-state"`) || !strings.Contains(body, `"authorize_url"`) {
		t.Errorf("begin: %d %s", st, body)
	}
	if st, body := post("/v1/credentials/down/authorize", ""); st != 409 || !strings.Contains(body, "not_authorizable") {
		t.Errorf("begin for a credential without the flow: %d %s", st, body)
	}
	for _, bad := range []string{"", "{", `{"state":"good-state"}`, `{"code":"c"}`, strings.Repeat("x", 9000)} {
		if st, body := post("/v1/credentials/svc/authorize/complete", bad); st != 400 || !strings.Contains(body, "invalid_request") {
			t.Errorf("complete with body %.20q: %d %s", bad, st, body)
		}
	}
	if st, body := post("/v1/credentials/svc/authorize/complete", `{"state":"forged","code":"c"}`); st != 400 || !strings.Contains(body, "invalid_state") {
		t.Errorf("complete with a forged state: %d %s", st, body)
	}
	if st, body := post("/v1/credentials/svc/authorize/complete", `{"state":"good-state","code":"c"}`); st != 200 || !strings.Contains(body, `"name":"svc"`) {
		t.Errorf("complete: %d %s", st, body)
	}
}
