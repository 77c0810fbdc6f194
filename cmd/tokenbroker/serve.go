package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"

	"github.com/redis/go-redis/v9"

	"github.com/tokenbroker/tokenbroker/api"
	"github.com/tokenbroker/tokenbroker/broker"
)

func serveCmd(environ []string, stderr io.Writer) int {
	cfg, ok := configure(environ, stderr)
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
	var store broker.Store = local
	if cfg.Redis != nil {
		redis.SetLogger(redisLog{log})
		rc := redis.NewUniversalClient(cfg.Redis)
		defer rc.Close()
		shared, err := broker.NewRedisStore(broker.RedisOptions{Client: rc, Prefix: cfg.RedisPrefix, Sealer: sealer})
		if err != nil {
			return err
		}
		store = &broker.FleetStore{Local: local, Shared: shared, Logger: log}
		log.Info("fleet mode: sharing tokens through Redis", "redis", cfg.Redis.Addrs, "sentinel_master", cfg.Redis.MasterName, "prefix", cfg.RedisPrefix)
	}
	defer store.Close()

	hc := &http.Client{Timeout: cfg.RequestTimeout}
	creds := make([]broker.Credential, 0, len(cfg.Credentials))
	for _, cc := range cfg.Credentials {
		c, err := cc.credential(hc)
		if err != nil {
			return fmt.Errorf("credential %q: %w", cc.Name, err)
		}
		creds = append(creds, c)
	}
	b, err := broker.New(broker.Options{
		Store:               store,
		Logger:              log,
		RefreshAt:           cfg.RefreshAt,
		HandoutWait:         cfg.HandoutWait,
		RequestTimeout:      cfg.RequestTimeout,
		BackoffMax:          cfg.BackoffMax,
		ProviderConcurrency: cfg.ProviderConcurrency,
	}, creds)
	if err != nil {
		return err
	}
	if err := b.Start(ctx); err != nil {
		return err
	}
	defer b.Close()

	apiOpts := api.Options{Path: cfg.Socket, Logger: log, Version: version}
	ln, err := api.Listen(apiOpts)
	if err != nil {
		return err
	}
	srv := api.NewServer(b, apiOpts)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	log.Info("tokenbroker serving", "socket", cfg.Socket, "state_dir", cfg.StateDir,
		"credentials", len(creds), "version", version)
	if ready != nil {
		ready()
	}

	select {
	case err := <-served:
		return fmt.Errorf("serving %s: %w", cfg.Socket, err)
	case <-ctx.Done():
	}
	log.Info("shutting down: finishing handouts in flight")
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("handouts still in flight at the shutdown deadline", "err", err)
	}
	if err := <-served; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	log.Info("tokenbroker stopped")
	return nil
}

// redisLog sends go-redis's own messages (reconnects, failovers) to our log.
type redisLog struct{ log *slog.Logger }

func (l redisLog) Printf(_ context.Context, format string, v ...any) {
	l.log.Warn("redis: " + fmt.Sprintf(format, v...))
}
