package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strings"
	"time"

	"github.com/tokenbroker/tokenbroker/api"
	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/broker/store/file"
	"github.com/tokenbroker/tokenbroker/sources"
	"github.com/tokenbroker/tokenbroker/sources/oauthtest"
)

// selfName is the credential the -self broker holds.
const selfName = "bench"

// selfBroker is a broker wired as cmd/tokenbroker's serve wires it (a
// FileStore, api.NewMetrics as the broker's Observer and the API's Metrics,
// broker.New, Start, api.Listen, api.NewServer with an access map), with one
// client_credentials credential at a local provider whose tokens live an
// hour, so no refresh happens while it is measured.
type selfBroker struct {
	socket  string
	closers []func() error
}

func startSelf(dir string, withAccess bool, stderr io.Writer) (_ *selfBroker, err error) {
	s := &selfBroker{}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	p, err := oauthtest.Start(oauthtest.Options{AccessLifetime: time.Hour})
	if err != nil {
		return nil, fmt.Errorf("starting the local provider: %w", err)
	}
	s.closers = append(s.closers, p.Close)

	// As the demo's "firework" credential: client_credentials, JWT access
	// tokens of a realistic size.
	const clientID, secret = "load-app", "load-secret"
	scopes := []string{"videos:write", "livestreams:read"}
	p.AddClient(oauthtest.Client{ID: clientID, Secret: secret, Scopes: scopes, Dialect: oauthtest.Firework})
	d, err := sources.Preset("firework", sources.ClientCredentials)
	if err != nil {
		return nil, err
	}
	d.TokenURL = p.TokenURL(oauthtest.Firework)
	e := &sources.Endpoint{Dialect: &d, HTTP: &http.Client{Timeout: 30 * time.Second},
		Client: sources.Client{ID: clientID, Secret: sources.NewSecret(secret), Scopes: scopes}}
	src, err := sources.New(sources.ClientCredentials, e, "", nil) // nil: the Client's secrets
	if err != nil {
		return nil, err
	}

	// The daemon logs JSON at Info; Warn keeps the report readable and costs
	// the hot path the same (its only log call is an Enabled(Debug) check).
	logger := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	store, err := file.Open(filepath.Join(dir, "state"))
	if err != nil {
		return nil, err
	}
	s.closers = append(s.closers, store.Close)
	// As serve wires it: metrics on (the broker's Observer and the API's
	// handout counters), and an access map holding every credential.
	metrics := api.NewMetrics(api.MetricsOptions{Version: "load"})
	metrics.AddCredential(selfName, "firework")
	b, err := broker.New(broker.Options{Store: store, Logger: logger, Observer: metrics}, []broker.Credential{{
		Name:     selfName,
		Provider: "firework",
		Source:   src,
		Fingerprint: url.Values{"token_url": {d.TokenURL}, "client_id": {clientID},
			"grant": {string(sources.ClientCredentials)}, "scope": {strings.Join(scopes, " ")}}.Encode(),
	}})
	if err != nil {
		return nil, err
	}
	if err := b.Start(context.Background()); err != nil {
		return nil, err
	}
	s.closers = append(s.closers, b.Close)

	s.socket = filepath.Join(dir, "broker.sock")
	access := api.Access{} // the default: anyone who can connect
	if withAccess {
		// TOKENBROKER_BENCH_ALLOW_UIDS=<this user>: the peer check runs.
		access = api.Access{Set: true, UIDs: []uint32{uint32(os.Geteuid())}}
	}
	opts := api.Options{Path: s.socket, Logger: logger, Version: "load", Metrics: metrics,
		Access: map[string]api.Access{selfName: access}}
	ln, err := api.Listen(opts)
	if err != nil {
		return nil, err
	}
	srv := api.NewServer(b, opts)
	served := make(chan error, 1)
	go pprof.Do(context.Background(), pprof.Labels("side", "server", "target", "broker"), func(context.Context) {
		served <- srv.Serve(ln)
	})
	s.closers = append(s.closers, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err := srv.Shutdown(ctx)
		return errors.Join(err, <-served)
	})
	return s, nil
}

func (s *selfBroker) close() error {
	var errs []error
	for _, c := range slices.Backward(s.closers) {
		errs = append(errs, c())
	}
	s.closers = nil
	return errors.Join(errs...)
}

// answer is one real answer of the broker, which the baseline repeats.
type answer struct {
	Path   string      `json:"path"`   // the request path it answers
	Header http.Header `json:"header"` // what the handler sets (net/http adds Date and Content-Length)
	Body   []byte      `json:"body"`
}

// serverSet are the headers net/http sets itself; the baseline's handler
// leaves them to it, as the broker's does.
var serverSet = []string{"Date", "Content-Length", "Connection", "Transfer-Encoding", "Keep-Alive"}

// fetchAnswer asks socket for name's token until it answers 200 (a freshly
// started broker may still be fetching its first token) or timeout passes.
func fetchAnswer(socket, name string, timeout time.Duration) (*answer, error) {
	req := buildRequest(name)
	end := time.Now().Add(timeout)
	var last error
	for {
		a, err := fetchOnce(socket, req)
		if err == nil {
			a.Path = "/v1/tokens/" + name
			return a, nil
		}
		last = err
		var se *statusError
		if errors.As(err, &se) && se.status != http.StatusServiceUnavailable {
			return nil, err // unknown credential, access denied...: asking again will not help
		}
		if time.Now().After(end) {
			return nil, last
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func fetchOnce(socket string, req []byte) (*answer, error) {
	c, err := net.DialTimeout("unix", socket, 5*time.Second)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.Write(req); err != nil {
		return nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, int64(maxBodyBytes)))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK || !bytes.Contains(body, wantInBody) {
		// The body of an error answer holds no token; it says what is wrong.
		// (A 200 without "access_token" is not quoted: it may hold a secret.)
		if resp.StatusCode == http.StatusOK {
			return nil, &statusError{resp.StatusCode, "the answer holds no access_token"}
		}
		return nil, &statusError{resp.StatusCode, fmt.Sprintf("%s: %s", resp.Status, bytes.TrimSpace(body))}
	}
	h := resp.Header.Clone()
	for _, k := range serverSet {
		delete(h, k)
	}
	return &answer{Header: h, Body: body}, nil
}

type statusError struct {
	status int
	msg    string
}

func (e *statusError) Error() string { return "answer " + e.msg }

// sameAnswer checks that the baseline's answer b repeats the broker's a:
// the same body bytes and the same header names and values.
func sameAnswer(a, b *answer) error {
	if !bytes.Equal(a.Body, b.Body) {
		return fmt.Errorf("the baseline's body (%d bytes) differs from the broker's (%d bytes)", len(b.Body), len(a.Body))
	}
	if len(a.Header) != len(b.Header) {
		return fmt.Errorf("the baseline's headers %v differ from the broker's %v", headerNames(b.Header), headerNames(a.Header))
	}
	for k, v := range a.Header {
		if !slices.Equal(v, b.Header[k]) {
			return fmt.Errorf("the baseline's %s header differs from the broker's", k)
		}
	}
	return nil
}

func headerNames(h http.Header) []string {
	names := slices.Collect(func(yield func(string) bool) {
		for k := range h {
			if !yield(k) {
				return
			}
		}
	})
	slices.Sort(names)
	return names
}

// baselineHandler answers every request with a, as cheaply as a handler
// can while doing what every handler must: check the X-Tokenbroker header
// and the path, set the headers by direct map assignment (as the broker
// does), write the status and the body.
type baselineHandler struct {
	path   string
	header []headerKV // a slice, not a map, to range cheaply
	body   []byte
}

type headerKV struct {
	name  string
	value []string
}

func newBaselineHandler(a *answer) *baselineHandler {
	h := &baselineHandler{path: a.Path, body: a.Body}
	for _, k := range headerNames(a.Header) {
		h.header = append(h.header, headerKV{k, a.Header[k]})
	}
	return h
}

var (
	errorContentType = []string{"application/json"}
	badRequestBody   = []byte(`{"error":"bad_request","error_description":"baseline: missing X-Tokenbroker: 1 or wrong path"}` + "\n")
)

func (h *baselineHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hdr := w.Header()
	if v := r.Header["X-Tokenbroker"]; len(v) != 1 || v[0] != "1" || r.Method != http.MethodGet || r.URL.Path != h.path {
		hdr["Content-Type"] = errorContentType
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write(badRequestBody)
		return
	}
	for _, kv := range h.header {
		hdr[kv.name] = kv.value
	}
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(h.body)
}

// newBaselineServer is an http.Server with the broker's settings (api's
// timeouts and header limit; keep-alive on; no middleware).
func newBaselineServer(a *answer) *http.Server {
	return &http.Server{
		Handler:           newBaselineHandler(a),
		ReadHeaderTimeout: api.ReadHeaderTimeout,
		ReadTimeout:       api.ReadTimeout,
		WriteTimeout:      api.WriteTimeout,
		IdleTimeout:       api.IdleTimeout,
		MaxHeaderBytes:    api.MaxHeaderBytes,
		ErrorLog:          log.New(io.Discard, "", 0),
	}
}

// baseline is a running baseline server.
type baseline struct {
	socket string
	stop   func() error
}

// startBaselineInProcess serves a on a new socket in dir from this process.
func startBaselineInProcess(dir string, a *answer) (*baseline, error) {
	socket := filepath.Join(dir, "baseline.sock")
	ln, err := net.Listen("unix", socket)
	if err != nil {
		return nil, err
	}
	srv := newBaselineServer(a)
	served := make(chan error, 1)
	go pprof.Do(context.Background(), pprof.Labels("side", "server", "target", "baseline"), func(context.Context) {
		served <- srv.Serve(ln)
	})
	return &baseline{socket: socket, stop: func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err := srv.Shutdown(ctx)
		if serr := <-served; !errors.Is(serr, http.ErrServerClosed) {
			err = errors.Join(err, serr)
		}
		return err
	}}, nil
}

// internalBaselineFlag makes the tool a baseline server for its parent (see
// startBaselineProcess).
const internalBaselineFlag = "-internal-baseline-server"

// baselineConfig is what the parent sends its baseline child on stdin.
type baselineConfig struct {
	Socket string  `json:"socket"`
	Answer *answer `json:"answer"`
}

// startBaselineProcess runs the baseline in a child process (this same
// executable), so that against a broker in its own process the baseline is
// in its own process too and does not share this one's scheduler with the
// clients. The answer goes over a pipe, never through a file or argv; the
// child stops when its stdin closes, so it cannot outlive this process.
func startBaselineProcess(dir string, a *answer, stderr io.Writer) (*baseline, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("baseline process: %w", err)
	}
	socket := filepath.Join(dir, "baseline.sock")
	cmd := exec.Command(exe, internalBaselineFlag)
	cmd.Stderr = stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("baseline process: %w", err)
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	stop := func() error {
		stdin.Close()
		select {
		case err := <-waited:
			return err
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			return errors.Join(errors.New("baseline process did not stop; killed it"), <-waited)
		}
	}
	if err := json.NewEncoder(stdin).Encode(baselineConfig{Socket: socket, Answer: a}); err != nil {
		return nil, errors.Join(fmt.Errorf("baseline process: %w", err), stop())
	}
	ready := make(chan error, 1)
	go func() {
		line, err := bufio.NewReader(stdout).ReadString('\n')
		if err == nil && line != "ready\n" {
			err = fmt.Errorf("unexpected %q", line)
		}
		ready <- err
	}()
	select {
	case err := <-ready:
		if err != nil {
			return nil, errors.Join(fmt.Errorf("baseline process did not start: %w", err), stop())
		}
	case <-time.After(10 * time.Second):
		return nil, errors.Join(errors.New("baseline process did not start within 10s"), stop())
	}
	return &baseline{socket: socket, stop: stop}, nil
}

// serveBaselineChild is the child's side of startBaselineProcess.
func serveBaselineChild(stdin io.Reader, stdout io.Writer) error {
	br := bufio.NewReader(stdin)
	var cfg baselineConfig
	if err := json.NewDecoder(bytes.NewReader(mustLine(br))).Decode(&cfg); err != nil || cfg.Answer == nil {
		return fmt.Errorf("baseline child: bad configuration on stdin: %v", err)
	}
	ln, err := net.Listen("unix", cfg.Socket)
	if err != nil {
		return err
	}
	srv := newBaselineServer(cfg.Answer)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	if _, err := io.WriteString(stdout, "ready\n"); err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, br) // until the parent closes stdin or exits
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(ctx)
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func mustLine(br *bufio.Reader) []byte {
	line, _ := br.ReadBytes('\n')
	return line
}
