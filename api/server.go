package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/tokenbroker/tokenbroker/broker"
)

// Broker is what the server needs from the engine. *broker.Broker
// implements it.
type Broker interface {
	// Token hands out name's access token, or returns an error wrapping
	// broker.ErrUnknownCredential or a *broker.UnavailableError.
	Token(ctx context.Context, name string) (broker.Handout, error)
	// Status reports every credential's condition, without secrets.
	Status() []broker.Status
	// Refresh refreshes name now and waits for the outcome.
	Refresh(ctx context.Context, name string) error
	// BeginAuthorization and CompleteAuthorization run the
	// authorization-code flow for name (tokenbroker authorize).
	BeginAuthorization(name string) (broker.AuthRequest, error)
	CompleteAuthorization(ctx context.Context, name, state, code string) (broker.Status, error)
}

// Options configure the socket and the server; zero values take defaults.
type Options struct {
	// Path is the socket's path; "" means client.DefaultSocket().
	Path string
	// Mode is the socket file's permission bits; 0 means 0660 (the broker's
	// user and group may connect).
	Mode os.FileMode
	// Logger receives errors, panics and, at Debug, one line per request.
	Logger *slog.Logger // default slog.Default()
	// Version is reported by /healthz when set.
	Version string
	// Metrics, when set, are counted and served at GET /metrics.
	Metrics *Metrics
	// GID is the socket file's group; 0 leaves the broker's own. Set it so
	// a group's members may connect (with Mode 0660).
	GID int
	// Access says, by credential name, who may fetch its token; a name
	// missing here is open to every caller that can connect.
	Access map[string]Access
	// Upstreams are the APIs the proxy forwards to, by credential name
	// (/v1/proxy/{name}/...); a name missing here has no proxy.
	Upstreams map[string]Upstream
}

// DefaultMode is the socket's mode when Options.Mode is 0.
const DefaultMode os.FileMode = 0o660

// Server timeouts. A handout can wait several seconds for a refresh in
// flight, so writes get far more time than that.
const (
	ReadHeaderTimeout = 5 * time.Second
	ReadTimeout       = 10 * time.Second
	WriteTimeout      = 30 * time.Second
	IdleTimeout       = 120 * time.Second
	MaxHeaderBytes    = 16 << 10
)

// Server answers the broker's HTTP API.
type Server struct {
	b       Broker
	log     *slog.Logger
	version string
	metrics *Metrics
	access  map[string]Access
	peers   peers
	limits  limiter
	proxies map[string]*proxyRoute
	routed  http.Handler // the header check, cleanPathsOnly, then ServeMux
	handler http.Handler // guard, the handout fast path, then routed
	srv     *http.Server
}

// NewServer returns a server handing out b's tokens. It ignores opts.Path
// and opts.Mode, which are Listen's.
func NewServer(b Broker, opts Options) *Server {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	s := &Server{b: b, log: log, version: opts.Version, metrics: opts.Metrics, access: opts.Access}
	s.proxies = s.newProxies(opts.Upstreams)
	if s.metrics != nil {
		s.metrics.track(b)
	}
	s.routed = requireHeader(s.routes())
	s.handler = guard(log, http.HandlerFunc(s.dispatch))
	s.srv = &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: ReadHeaderTimeout,
		ReadTimeout:       ReadTimeout,
		WriteTimeout:      WriteTimeout,
		IdleTimeout:       IdleTimeout,
		MaxHeaderBytes:    MaxHeaderBytes,
		// "OPTIONS *" would get net/http's own empty 200, past every check.
		DisableGeneralOptionsHandler: true,
		ConnContext:                  s.peers.connContext,
		ConnState:                    s.peers.connState,
		ErrorLog:                     slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	return s
}

// Handler returns the API with its middleware, for tests and for serving
// it elsewhere.
func (s *Server) Handler() http.Handler { return s.handler }

// Serve answers requests on l until Shutdown. It returns nil after
// Shutdown, and otherwise the error that stopped it. It closes l, which
// removes a socket made by Listen.
func (s *Server) Serve(l net.Listener) error {
	err := s.srv.Serve(l)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting connections, removes the socket file (a Listen
// listener removes it when closed), waits for requests in flight to finish
// and closes idle connections. When ctx ends first it returns ctx's error
// and the remaining connections are closed.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	if err != nil {
		_ = s.srv.Close()
	}
	return err
}

// endpoints lists the API for not_found answers.
var endpoints = []string{
	"GET /v1/tokens/{name}",
	"POST /v1/tokens/{name}/refresh",
	"GET /v1/credentials",
	"POST /v1/credentials/{name}/authorize",
	"POST /v1/credentials/{name}/authorize/complete",
	"GET /healthz",
	"GET /metrics",
	"ANY /v1/proxy/{name}/{path...}",
}

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/tokens/{name}", s.token)
	mux.HandleFunc("POST /v1/tokens/{name}/refresh", s.refresh)
	mux.HandleFunc("GET /v1/credentials", s.credentials)
	mux.HandleFunc("POST /v1/credentials/{name}/authorize", s.authorizeBegin)
	mux.HandleFunc("POST /v1/credentials/{name}/authorize/complete", s.authorizeComplete)
	mux.Handle("/v1/credentials/{name}/authorize", methodNotAllowed("POST"))
	mux.Handle("/v1/credentials/{name}/authorize/complete", methodNotAllowed("POST"))
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.HandleFunc("/v1/proxy/{name}", s.proxy)
	mux.HandleFunc("/v1/proxy/{name}/{path...}", s.proxy)
	if s.metrics != nil {
		mux.Handle("GET /metrics", s.metrics.Handler())
		mux.Handle("/metrics", methodNotAllowed("GET, HEAD"))
	}
	// The same paths without a method: every other method gets a JSON 405
	// rather than ServeMux's plain-text one.
	mux.Handle("/v1/tokens/{name}", methodNotAllowed("GET, HEAD"))
	mux.Handle("/v1/tokens/{name}/refresh", methodNotAllowed("POST"))
	mux.Handle("/v1/credentials", methodNotAllowed("GET, HEAD"))
	mux.Handle("/healthz", methodNotAllowed("GET, HEAD"))
	mux.HandleFunc("/", notFound)
	return cleanPathsOnly(mux)
}

// tokenPattern is the route of the handout, as ServeMux names it in
// Request.Pattern.
const tokenPattern = "GET /v1/tokens/{name}"

// dispatch sends a handout of a valid name (the hot path) straight to it,
// and every other request through the header check and ServeMux. The two
// ways give the same answer: see fastTokenName.
func (s *Server) dispatch(w http.ResponseWriter, r *http.Request) {
	if name, ok := fastTokenName(r); ok {
		// As ServeMux names the route. The name is passed on rather than
		// set with r.SetPathValue, which would allocate a map (two
		// allocations, 336 bytes) per request for no reader: r.PathValue
		// reads "" on this path.
		r.Pattern = tokenPattern
		s.handout(w, r, name)
		return
	}
	s.routed.ServeHTTP(w, r)
}

// fastTokenName reports whether r is GET /v1/tokens/{name} with a valid name
// and the X-Tokenbroker header, and returns the name. For such a request the
// routed way would do exactly this: requireHeader lets it through;
// cleanPathsOnly lets it through (with RawPath empty the escaped path is the
// path, and "/v1/tokens/" followed by [a-z0-9_-] holds no dot segment or
// doubled slash); ServeMux routes it to token with that name (no escapes to
// undo, no host patterns, and GET beats the method-less pattern). Every
// other request, including one that would fail the header check, takes the
// routed way, so its answer is the routed one by construction.
func fastTokenName(r *http.Request) (string, bool) {
	if r.Method != http.MethodGet || r.URL.RawPath != "" {
		return "", false
	}
	name, ok := strings.CutPrefix(r.URL.Path, tokensPrefix)
	if !ok || !validName(name) {
		return "", false
	}
	if v := r.Header["X-Tokenbroker"]; len(v) != 1 || v[0] != "1" {
		return "", false
	}
	return name, true
}

// cleanPathsOnly answers paths that ServeMux would redirect to a cleaned
// form (dot segments, doubled slashes) itself: a token client does not
// follow redirects, and "/v1/tokens/../x" is a bad name, not a move.
func cleanPathsOnly(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p := r.URL.EscapedPath(); cleanPath(p) != p {
			notFound(w, r)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// cleanPath is ServeMux's canonical form of p.
func cleanPath(p string) string {
	if p == "" {
		return "/"
	}
	if p[0] != '/' {
		p = "/" + p
	}
	np := path.Clean(p)
	if p[len(p)-1] == '/' && np != "/" {
		if len(p) == len(np)+1 && p[:len(np)] == np {
			return p
		}
		return np + "/"
	}
	return np
}

// token answers GET /v1/tokens/{name} as routed by ServeMux (HEAD, and
// names dispatch leaves to the mux).
func (s *Server) token(w http.ResponseWriter, r *http.Request) {
	s.handout(w, r, r.PathValue("name"))
}

// handout answers a token request for name: the hot path.
func (s *Server) handout(w http.ResponseWriter, r *http.Request, name string) {
	if !validName(name) {
		s.metrics.handout("", invalidName(w, name))
		return
	}
	if !s.allowed(w, r, name, "fetch its token") {
		return
	}
	h, err := s.b.Token(r.Context(), name)
	if err != nil {
		s.metrics.handout(name, s.brokerError(w, name, err, false))
		return
	}
	writeHandout(w, h, time.Now())
	s.metrics.handout(name, http.StatusOK)
}

// refresh answers POST /v1/tokens/{name}/refresh.
func (s *Server) refresh(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if !validName(name) {
		invalidName(w, name)
		return
	}
	if !s.allowed(w, r, name, "refresh it") {
		return
	}
	uid := selfUID
	if p := PeerFrom(r.Context()); p != nil {
		uid = p.UID
	}
	if ok, wait := s.limits.allowRefresh(name, uid, time.Now()); !ok {
		w.Header().Set("Retry-After", strconv.Itoa(retryAfter(time.Now().Add(wait), time.Now())))
		writeError(w, http.StatusTooManyRequests, "refresh_limited", fmt.Sprintf(
			"credential %q: a refresh was forced less than %s ago, or this caller forces refreshes too often; the token in hand is fresh, fetch it with GET %s%s",
			name, RefreshCooldown, tokensPrefix, name))
		return
	}
	if err := s.b.Refresh(r.Context(), name); err != nil {
		s.brokerError(w, name, err, true)
		return
	}
	w.Header()["Cache-Control"] = noStore
	w.WriteHeader(http.StatusNoContent)
}

// credentials answers GET /v1/credentials. The listing grows with the
// credentials (about 250 bytes each), so it is written as it is encoded,
// one credential at a time, never held whole.
func (s *Server) credentials(w http.ResponseWriter, _ *http.Request) {
	hdr := w.Header()
	hdr["Content-Type"] = jsonContentType
	hdr["Cache-Control"] = noStore
	buf := []byte(`{"credentials":[`)
	for i, st := range s.b.Status() {
		if i > 0 {
			buf = append(buf, ',')
		}
		// A status holds no secret; encoding/json is fine off the hot
		// path, and it cannot fail on these plain fields.
		b, err := json.Marshal(wireStatus(st))
		if err != nil {
			// The answer has begun: only a cut connection can tell the
			// client, which then reports a broken answer.
			s.log.Error("cannot encode a credential's status", "credential", st.Name, "err", err)
			panic(http.ErrAbortHandler)
		}
		buf = append(buf, b...)
		if len(buf) >= 32<<10 {
			if _, err := w.Write(buf); err != nil {
				return // the caller went away
			}
			buf = buf[:0]
		}
	}
	_, _ = w.Write(append(buf, "]}\n"...))
}

// healthz answers GET /healthz.
func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	b := []byte(`{"status":"ok"`)
	if s.version != "" {
		b = append(b, `,"version":`...)
		b = appendJSONString(b, s.version)
	}
	b = append(b, "}\n"...)
	hdr := w.Header()
	hdr["Content-Type"] = jsonContentType
	hdr["Cache-Control"] = noStore
	_, _ = w.Write(b)
}
