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
	"syscall"

	"github.com/redis/go-redis/v9"

	"github.com/tokenbroker/tokenbroker/api"
	"github.com/tokenbroker/tokenbroker/broker"
)

func serveCmd(stderr io.Writer) int {
	cfg, ok := configure(stderr)
	if !ok {
		return exitConfig
	}
	log := newLogger(cfg, stderr)
	ctx, stop := signalContext(stderr)
	defer stop()
	if err := serve(ctx, cfg, log, nil); err != nil {
		log.Error("tokenbroker stopped", "err", err)
		return exitFail
	}
	return exitOK
}

// serve runs the daemon until ctx ends. ready, when not nil, is called once
// the socket accepts handouts.
func serve(ctx context.Context, cfg Config, log *slog.Logger, ready func()) error {
	if err := harden(); err != nil {
		log.Warn("cannot disable core dumps; secrets could land in a core file", "err", err)
	}
	local, err := broker.OpenFileStore(cfg.StateDir)
	if err != nil {
		return err
	}
	sealer, err := broker.NewSealer(cfg.EncryptionKeys)
	if err != nil {
		return err
	}
	if !sealer.Enabled() {
		log.Warn("STORAGE IS PLAINTEXT: refresh tokens are written unencrypted; set TOKENBROKER_ENCRYPTION_KEY")
	}
	local.Sealer = sealer
	metrics := api.NewMetrics(version)
	crash := crashPoint(cfg.CrashAt)
	var store broker.Store = local
	if cfg.Redis != nil {
		redis.SetLogger(redisLog{log})
		rc := redis.NewUniversalClient(cfg.Redis)
		defer rc.Close()
		rc.AddHook(redisErrors{metrics})
		shared, err := broker.NewRedisStore(broker.RedisOptions{Client: rc, Prefix: cfg.RedisPrefix, LockTTL: cfg.RedisLockTTL, Sealer: sealer})
		if err != nil {
			return err
		}
		store = &broker.FleetStore{Local: local, Shared: shared, Logger: log, CrashPoint: crash}
		log.Info("fleet mode: sharing tokens through Redis", "redis", cfg.Redis.Addrs, "sentinel_master", cfg.Redis.MasterName, "prefix", cfg.RedisPrefix)
	}
	defer store.Close()

	hc := &http.Client{Timeout: cfg.RequestTimeout}
	creds := make([]broker.Credential, 0, len(cfg.Credentials))
	lives := make([]*live, 0, len(cfg.Credentials))
	for _, cc := range cfg.Credentials {
		c, l, err := credential(cc, hc, log)
		if err != nil {
			return fmt.Errorf("credential %q: %w", cc.Name, err)
		}
		creds, lives = append(creds, c), append(lives, l)
		metrics.AddCredentials(c.Name) // before the broker starts counting
	}
	b, err := broker.New(broker.Options{
		Store:               store,
		Logger:              log,
		RefreshAt:           cfg.RefreshAt,
		HandoutWait:         cfg.HandoutWait,
		RequestTimeout:      cfg.RequestTimeout,
		BackoffMax:          cfg.BackoffMax,
		ProviderConcurrency: cfg.ProviderConcurrency,
		Observer:            metrics,
		CrashPoint:          crash,
	}, creds)
	if err != nil {
		return err
	}
	if err := b.Start(ctx); err != nil {
		return err
	}
	defer b.Close()

	access := map[string]api.Access{}
	for _, cc := range cfg.Credentials {
		access[cc.Name] = cc.Access
	}
	apiOpts := api.Options{Path: cfg.Socket, Mode: cfg.SocketMode, GID: cfg.SocketGID, Logger: log,
		Version: version, Metrics: metrics, Access: access}
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
		"credentials", len(creds), "version", version)
	rctx, stopReload := context.WithCancel(ctx)
	defer stopReload()
	go reloadSecrets(rctx, lives, log)
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

// crashPoint returns, when TOKENBROKER_TEST_CRASH_AT names a refresh step
// (broker.CrashBeforeRequest, ...), a hook that kills this process with
// SIGKILL the first time a refresh reaches it. Crash tests only.
func crashPoint(at string) func(string) {
	if at == "" {
		return nil
	}
	return func(step string) {
		if step == at {
			fmt.Fprintf(os.Stderr, "tokenbroker: crash point %s: SIGKILL\n", step)
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		}
	}
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
