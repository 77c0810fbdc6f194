package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/tokenbroker/tokenbroker/cmd/tokenbroker/internal/config"
	"github.com/tokenbroker/tokenbroker/sources"
)

// secretPoll is how often the _FILE secrets are checked for changes.
// Kubernetes replaces a mounted secret by swapping a symlink, which a stat
// through the link sees; polling needs no inotify and misses no swap.
const secretPoll = 2 * time.Second

// live is what a running credential lets an operator replace without a
// restart: its client secrets and its password.
type live struct {
	cfg      CredentialConfig
	endpoint *sources.Endpoint
	password *sources.PasswordSource // nil unless the password grant
}

// reloadSecrets re-reads the configuration on SIGHUP and whenever a file
// named by a _FILE variable changes, and swaps in new client secrets and
// passwords. A configuration that no longer loads changes nothing: the
// secrets in use stay, and the problems are logged. Tokens already issued
// stay in use; nothing is refreshed early.
func reloadSecrets(ctx context.Context, creds []*live, log *slog.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	t := time.NewTicker(secretPoll)
	defer t.Stop()
	seen := secretFiles(os.Environ())
	for {
		why := ""
		select {
		case <-ctx.Done():
			return
		case <-hup:
			why = "SIGHUP"
		case <-t.C:
			now := secretFiles(os.Environ())
			if slices.Equal(now, seen) {
				continue
			}
			seen, why = now, "a secret file changed"
		}
		cfg, err := config.Load()
		if err != nil {
			for _, line := range strings.Split(err.Error(), "\n") {
				log.Error("secret reload failed; the secrets in use are kept", "reason", why, "problem", line)
			}
			continue
		}
		applySecrets(cfg, creds, log, why)
	}
}

func applySecrets(cfg Config, creds []*live, log *slog.Logger, why string) {
	changed := 0
	for _, cc := range cfg.Credentials {
		i := slices.IndexFunc(creds, func(l *live) bool { return l.cfg.Name == cc.Name })
		if i < 0 {
			continue // a new credential needs a restart; see below
		}
		l := creds[i]
		if !cc.Client.Secret.Equal(l.cfg.Client.Secret) || !cc.Client.PreviousSecret.Equal(l.cfg.Client.PreviousSecret) {
			l.endpoint.SetClientSecrets(cc.Client.Secret, cc.Client.PreviousSecret)
			l.cfg.Client.Secret, l.cfg.Client.PreviousSecret = cc.Client.Secret, cc.Client.PreviousSecret
			log.Info("client secret reloaded; tokens in hand stay in use", "credential", cc.Name, "from", cc.Sources["CLIENT_SECRET"], "reason", why)
			changed++
		}
		if l.password != nil && !cc.Password.Equal(l.cfg.Password) {
			l.password.SetPassword(cc.Password)
			l.cfg.Password = cc.Password
			log.Info("password reloaded; tokens in hand stay in use", "credential", cc.Name, "from", cc.Sources["PASSWORD"], "reason", why)
			changed++
		}
		if !cc.RefreshToken.Equal(l.cfg.RefreshToken) {
			log.Warn("the configured refresh token changed; it is used after a restart, or now with tokenbroker authorize", "credential", cc.Name)
			l.cfg.RefreshToken = cc.RefreshToken
		}
	}
	if len(cfg.Credentials) != len(creds) {
		log.Warn("the list of credentials changed; restart the broker to apply it", "reason", why)
	}
	if changed == 0 {
		log.Info("secrets re-read; none changed", "reason", why)
	}
}

// secretFiles describes every file a _FILE variable names: path, inode,
// size and modification time, so any replacement shows.
func secretFiles(environ []string) []string {
	var out []string
	for _, kv := range environ {
		k, path, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(k, config.Prefix+"_") || !strings.HasSuffix(k, "_FILE") {
			continue
		}
		fi, err := os.Stat(strings.TrimSpace(path))
		if err != nil {
			out = append(out, path+" missing")
			continue
		}
		var ino uint64
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			ino = st.Ino
		}
		out = append(out, fmt.Sprintf("%s %d %d %d", path, fi.ModTime().UnixNano(), fi.Size(), ino))
	}
	slices.Sort(out)
	return out
}
