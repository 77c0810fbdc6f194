package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/tokenbroker/tokenbroker/api"
	"github.com/tokenbroker/tokenbroker/api/tokenfile"
	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/broker/store"
	"github.com/tokenbroker/tokenbroker/broker/store/file"
	"github.com/tokenbroker/tokenbroker/broker/store/fleet"
	redisstore "github.com/tokenbroker/tokenbroker/broker/store/redis"
	"github.com/tokenbroker/tokenbroker/broker/store/seal"
	"github.com/tokenbroker/tokenbroker/cmd/tokenbroker/internal/config"
	"github.com/tokenbroker/tokenbroker/internal/crashpoint"
	"github.com/tokenbroker/tokenbroker/sources"
)

func serveCmd(stderr io.Writer) int {
	cfg, ok := configure(stderr)
	if !ok {
		return exitConfig
	}
	log := newLogger(cfg, stderr)
	environ := startEnviron() // what a reload reads again
	if os.Getenv("GOGC") == "" {
		// Nearly all of the broker's heap is its credentials, kept for
		// the whole run, and the default GOGC=100 lets the heap grow to
		// twice that before collecting, which top and a container limit
		// see as RSS. Handouts make little garbage; 50 costs little CPU.
		debug.SetGCPercent(defaultGCPercent)
	}
	shedOwnVariables(os.Environ())
	ctx, stop := signalContext(stderr)
	defer stop()
	if err := serve(ctx, cfg, environ, log, nil); err != nil {
		log.Error("tokenbroker stopped", "err", err)
		return exitFail
	}
	return exitOK
}

// shedOwnVariables removes the TOKENBROKER_ variables from the process's
// environment once they are read, before any goroutine starts. The first
// os.Getenv makes Go index the whole environment, a map that at 5,000
// credentials (30,000 variables) holds 1.7 MB for the whole run; Clearenv
// drops it. Other variables stay, the first of duplicates winning as in
// Getenv. A reload reads the variables from its copy (loadFrom).
func shedOwnVariables(environ []string) {
	var keep [][2]string
	seen := map[string]bool{}
	for _, kv := range environ {
		k, v, ok := strings.Cut(kv, "=")
		if ok && k != "" && !strings.HasPrefix(k, config.Prefix+"_") && !seen[k] {
			seen[k] = true
			keep = append(keep, [2]string{k, v})
		}
	}
	os.Clearenv()
	for _, kv := range keep {
		_ = os.Setenv(kv[0], kv[1])
	}
}

// defaultGCPercent is the daemon's GOGC unless the GOGC variable is set.
const defaultGCPercent = 50

// serve runs the daemon until ctx ends. ready, when not nil, is called once
// the socket accepts handouts.
// environ returns what a reload reads the configuration from.
func serve(ctx context.Context, cfg Config, environ func() []string, log *slog.Logger, ready func()) error {
	if err := harden(); err != nil {
		log.Warn("cannot disable core dumps; secrets could land in a core file", "err", err)
	}
	local, err := file.Open(cfg.StateDir)
	if err != nil {
		return err
	}
	sealer, err := seal.NewSealer(cfg.EncryptionKeys)
	if err != nil {
		return err
	}
	if !sealer.Enabled() {
		log.Warn("STORAGE IS PLAINTEXT: refresh tokens are written unencrypted; set TOKENBROKER_ENCRYPTION_KEY")
	}
	local.Sealer = sealer
	metrics := api.NewMetrics(api.MetricsOptions{Version: version, PerCredential: cfg.MetricsPerCredential})
	if err := crashpoint.Arm(cfg.CrashAt); err != nil {
		return err
	}
	var st store.Store = local
	if cfg.Redis != nil {
		redis.SetLogger(redisLog{log})
		rc := redis.NewUniversalClient(cfg.Redis)
		defer rc.Close()
		rc.AddHook(redisErrors{metrics})
		shared, err := redisstore.New(redisstore.Options{Client: rc, Prefix: cfg.RedisPrefix, LockTTL: cfg.RedisLockTTL, Sealer: sealer})
		if err != nil {
			return err
		}
		st = fleet.New(local, shared, fleet.Options{Logger: log})
		log.Info("fleet mode: sharing tokens through Redis", "redis", cfg.Redis.Addrs, "sentinel_master", cfg.Redis.MasterName, "prefix", cfg.RedisPrefix)
	}
	defer st.Close()

	files, err := tokenFiles(cfg.Credentials, log)
	if err != nil {
		return err
	}
	fctx, stopFiles := context.WithCancel(context.WithoutCancel(ctx))
	filesDone := make(chan struct{})
	go func() { files.Run(fctx); close(filesDone) }()
	defer func() { stopFiles(); <-filesDone }() // after the broker stops: removes the files

	hc := &http.Client{Timeout: cfg.RequestTimeout}
	n := len(cfg.Credentials)
	creds := make([]broker.Credential, 0, n)
	lives := make([]*live, 0, n)
	access := map[string]api.Access{} // only the restricted: a missing name is open
	upstreams := map[string]api.Upstream{}
	dialects := map[string]*sources.Dialect{}
	for _, cc := range cfg.Credentials {
		c, l, err := credential(cc, hc, log)
		if err != nil {
			return fmt.Errorf("credential %q: %w", cc.Name, err)
		}
		// Credentials configured alike share one Dialect: 5,000 copies of
		// the same one are over a megabyte.
		key := fmt.Sprintf("%#v", *l.endpoint.Dialect)
		if d := dialects[key]; d != nil {
			l.endpoint.Dialect = d
		} else {
			dialects[key] = l.endpoint.Dialect
		}
		creds, lives = append(creds, c), append(lives, l)
		if cc.Access.Set {
			access[cc.Name] = cc.Access
		}
		if cc.Upstream.URL != nil {
			upstreams[cc.Name] = cc.Upstream
		}
		metrics.AddCredential(c.Name, c.Provider) // before the broker starts counting
	}
	// The configs are not needed past here; dropping them lets the GC take
	// back what parsing the environment cost (megabytes at 5,000).
	cfg.Credentials = nil
	b, err := broker.New(broker.Options{
		Store:               st,
		Logger:              log,
		RefreshAt:           cfg.RefreshAt,
		HandoutWait:         cfg.HandoutWait,
		RequestTimeout:      cfg.RequestTimeout,
		AnswerTimeout:       cfg.AnswerTimeout,
		ProbeInterval:       cfg.ProbeInterval,
		BackoffMax:          cfg.BackoffMax,
		ProviderConcurrency: cfg.ProviderConcurrency,
		Observer:            metrics,
		Published:           files.Published,
	}, creds)
	if err != nil {
		return err
	}
	if err := b.Start(ctx); err != nil {
		return err
	}
	defer b.Close()

	apiOpts := api.Options{Path: cfg.Socket, Mode: cfg.SocketMode, GID: cfg.SocketGID, Logger: log,
		Version: version, Metrics: metrics, Access: access, Upstreams: upstreams}
	ln, err := api.Listen(apiOpts)
	if err != nil {
		return err
	}
	srv := api.NewServer(b, apiOpts)
	served := make(chan error, 2)
	go func() { served <- srv.Serve(ln) }()
	if cfg.MetricsAddr != "" {
		ms, err := serveMetrics(cfg.MetricsAddr, metrics, served)
		if err != nil {
			return err
		}
		defer ms.Close()
		log.Info("serving metrics", "addr", cfg.MetricsAddr)
	}
	log.Info("tokenbroker serving", "socket", cfg.Socket, "state_dir", cfg.StateDir,
		"credentials", n, "version", version)
	rctx, stopReload := context.WithCancel(ctx)
	defer stopReload()
	go reloadSecrets(rctx, environ, lives, log)
	if ready != nil {
		ready()
	}

	select {
	case err := <-served:
		return fmt.Errorf("serving %s: %w", cfg.Socket, err)
	case <-ctx.Done():
	}
	log.Info("shutting down: finishing handouts and refreshes in flight")
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	// Refreshes in flight get the grace to finish and save: a rotating
	// provider's answer holds the only copy of the next refresh token.
	// Handouts from memory finish at once; one still in flight after the
	// grace waits on a provider, and stopping the broker then ends that
	// refresh and releases its fleet lock, so the stop stays short.
	gctx, gcancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer gcancel()
	stopped := make(chan struct{})
	go func() { _ = b.Shutdown(gctx); close(stopped) }()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("handouts still in flight at the shutdown deadline", "err", err)
	}
	<-stopped
	if err := <-served; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	log.Info("tokenbroker stopped")
	return nil
}

// tokenFiles prepares the token files the credentials ask for.
func tokenFiles(creds []CredentialConfig, log *slog.Logger) (*tokenfile.Writer, error) {
	files := map[string]tokenfile.File{}
	for _, cc := range creds {
		if cc.TokenFile.Path != "" {
			files[cc.Name] = cc.TokenFile
		}
	}
	w, err := tokenfile.New(files, log)
	if fe := (*tokenfile.Error)(nil); errors.As(err, &fe) {
		return nil, fmt.Errorf("%s: %w", config.CredentialPrefix(fe.Credential)+"_TOKEN_FILE", err)
	}
	return w, err
}

// serveMetrics serves /metrics, and nothing else, on a TCP address.
func serveMetrics(addr string, m *api.Metrics, errs chan<- error) (*http.Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics address %s (TOKENBROKER_METRICS_ADDR): %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.Handler())
	ms := &http.Server{Handler: mux, ReadHeaderTimeout: api.ReadHeaderTimeout, IdleTimeout: api.IdleTimeout}
	go func() {
		if err := ms.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errs <- fmt.Errorf("metrics: %w", err)
		}
	}()
	return ms, nil
}

// redisErrors counts failed Redis commands; a missing key is an answer.
type redisErrors struct{ m *api.Metrics }

func (redisErrors) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h redisErrors) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if err != nil && !errors.Is(err, redis.Nil) {
			h.m.RedisError()
		}
		return err
	}
}

func (h redisErrors) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		if err != nil && !errors.Is(err, redis.Nil) {
			h.m.RedisError()
		}
		return err
	}
}

// redisLog sends go-redis's own messages (reconnects, failovers) to our log.
type redisLog struct{ log *slog.Logger }

func (l redisLog) Printf(_ context.Context, format string, v ...any) {
	l.log.Warn("redis: " + fmt.Sprintf(format, v...))
}
