package main

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"html"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/tokenbroker/tokenbroker/api/client"
	"github.com/tokenbroker/tokenbroker/cmd/tokenbroker/internal/config"
)

// authorizeCmd runs the authorization-code flow for a refresh_token
// credential through the running broker, which holds the client secret and
// the PKCE verifier: this command only carries the browser's answer.
func authorizeCmd(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("authorize", flag.ContinueOnError)
	fs.SetOutput(stderr)
	paste := fs.Bool("paste", false, "paste the address the browser was sent to, instead of listening on the loopback redirect URI (headless hosts)")
	timeout := fs.Duration("timeout", 5*time.Minute, "how long to wait for the browser")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: tokenbroker authorize [--paste] [--timeout 5m] NAME")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil || fs.NArg() != 1 {
		if err == nil {
			fs.Usage()
		}
		return exitConfig
	}
	name := fs.Arg(0)
	ctx, cancel := context.WithTimeout(context.Background(), *timeout+cliTimeout)
	defer cancel()
	c := client.New(client.DefaultSocket())
	defer c.Close()

	ar, err := c.BeginAuthorization(ctx, name)
	var ce *client.Error
	if errors.As(err, &ce) && ce.Code == "not_authorizable" {
		return fail(stderr, fmt.Errorf("%w; set %s_GRANT=refresh_token (with its AUTHORIZE_URL and REDIRECT_URI), restart the broker, then run tokenbroker authorize %s again",
			err, config.CredentialPrefix(name), name))
	}
	if err != nil {
		return fail(stderr, err)
	}
	var wait func() (url.Values, error)
	if loop, ok := loopback(ar.RedirectURI); ok && !*paste {
		ln, err := net.Listen("tcp", loop.Host)
		if err != nil {
			return fail(stderr, fmt.Errorf("credential %q: cannot listen on the redirect URI's address %s: %v; free it, or use --paste (the way when the registered redirect is fixed: listening needs a client that accepts any loopback port, RFC 8252)", name, loop.Host, err))
		}
		defer ln.Close()
		wait = serveCallback(ln, loop.Path, *timeout)
		fmt.Fprintf(stdout, "Open this URL in a browser and approve access for %s:\n\n  %s\n\nWaiting for the provider to send the browser back to %s ...\n", name, ar.URL, ar.RedirectURI)
	} else {
		fmt.Fprintf(stdout, "Open this URL in a browser and approve access for %s:\n\n  %s\n\n", name, ar.URL)
		fmt.Fprintf(stdout, "The provider then sends the browser to %s?code=...\nPaste that whole address here and press Enter:\n", cmp.Or(ar.RedirectURI, "the redirect URI"))
		wait = readPasted(stdin, *timeout)
	}
	answer, err := wait()
	if err != nil {
		return fail(stderr, fmt.Errorf("credential %q: %v; nothing changed, run tokenbroker authorize %s again", name, err, name))
	}
	if e := answer.Get("error"); e != "" {
		msg := fmt.Sprintf("the provider refused: %s", config.Printable(e))
		if d := answer.Get("error_description"); d != "" {
			msg += " (" + config.Printable(d) + ")"
		}
		if e == "access_denied" {
			msg += ": access was denied at the provider's consent page"
		}
		return fail(stderr, fmt.Errorf("credential %q: %s; nothing changed, run tokenbroker authorize %s again", name, msg, name))
	}
	if answer.Get("state") != ar.State {
		return fail(stderr, fmt.Errorf("credential %q: the answer's state does not match this authorization (a forged redirect, or one from an older attempt); nothing changed, run tokenbroker authorize %s again", name, name))
	}
	code := answer.Get("code")
	if code == "" {
		return fail(stderr, fmt.Errorf("credential %q: the answer holds no code; nothing changed, run tokenbroker authorize %s again", name, name))
	}
	st, err := c.CompleteAuthorization(ctx, name, ar.State, code)
	if err != nil {
		return fail(stderr, err)
	}
	fmt.Fprintf(stdout, "%s is authorized: the token expires %s and the broker keeps it fresh (state %s).\n",
		name, st.ExpiresAt.Local().Format(time.RFC3339), st.State)
	return exitOK
}

// loopback reports whether redirect is an http URI on a loopback address
// with a port, which this command can listen on (RFC 8252 7.3).
func loopback(redirect string) (*url.URL, bool) {
	u, err := url.Parse(redirect)
	if err != nil || u.Scheme != "http" || u.Port() == "" {
		return nil, false
	}
	if h := u.Hostname(); h == "localhost" {
		return u, true
	}
	ip := net.ParseIP(u.Hostname())
	return u, ip != nil && ip.IsLoopback()
}

// serveCallback answers the browser's redirect on path and returns its
// query.
func serveCallback(ln net.Listener, path string, timeout time.Duration) func() (url.Values, error) {
	if path == "" {
		path = "/"
	}
	got := make(chan url.Values, 1)
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != path {
			http.NotFound(w, r)
			return
		}
		q := r.URL.Query()
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		msg := "tokenbroker received the authorization. You may close this tab."
		if e := q.Get("error"); e != "" {
			msg = "The provider refused: " + e + ". See the terminal."
		}
		fmt.Fprintf(w, "<!doctype html><title>tokenbroker</title><p>%s</p>\n", html.EscapeString(msg))
		select {
		case got <- q:
		default:
		}
	})}
	go func() { _ = srv.Serve(ln) }()
	return func() (url.Values, error) {
		defer func() {
			// Let the browser have its page before the listener goes.
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_ = srv.Shutdown(ctx)
		}()
		select {
		case q := <-got:
			return q, nil
		case <-time.After(timeout):
			return nil, fmt.Errorf("no answer from the browser within %s (use --paste on a host without a browser, or when the provider sends the browser to a fixed registered redirect other than this one)", timeout)
		}
	}
}

// readPasted reads the address the browser was sent to, or just its query.
func readPasted(stdin io.Reader, timeout time.Duration) func() (url.Values, error) {
	return func() (url.Values, error) {
		line := make(chan string, 1)
		go func() {
			s, _ := bufio.NewReader(stdin).ReadString('\n')
			line <- strings.TrimSpace(s)
		}()
		var s string
		select {
		case s = <-line:
		case <-time.After(timeout):
			return nil, fmt.Errorf("nothing pasted within %s", timeout)
		}
		if s == "" {
			return nil, errors.New("nothing was pasted")
		}
		raw := s
		if u, err := url.Parse(s); err == nil && u.RawQuery != "" {
			raw = u.RawQuery
		}
		q, err := url.ParseQuery(strings.TrimPrefix(raw, "?"))
		if err != nil || (q.Get("code") == "" && q.Get("error") == "") {
			return nil, errors.New("the pasted text is not the address with ?code=... (or ?error=...) the browser was sent to")
		}
		return q, nil
	}
}
