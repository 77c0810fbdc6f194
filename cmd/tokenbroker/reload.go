package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync/atomic"
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
// restart: the secrets its Source sends, which the Source reads through
// Secrets at every request. It keeps only those, not the whole
// CredentialConfig: at 5,000 credentials a copy of each config is
// megabytes held for nothing.
type live struct {
	name         string
	secrets      atomic.Pointer[sources.Secrets] // replaced whole by a reload
	refreshToken sources.Secret                  // as configured at start or last reload
	endpoint     *sources.Endpoint               // serve shares its Dialect among credentials configured alike
}

func newLive(c CredentialConfig, e *sources.Endpoint) *live {
	l := &live{name: c.Name, refreshToken: c.RefreshToken, endpoint: e}
	l.secrets.Store(secretsOf(c))
	return l
}

// Secrets returns the secrets in use: the Source's secrets function.
func (l *live) Secrets() sources.Secrets { return *l.secrets.Load() }

// secretsOf returns the secrets c configures.
func secretsOf(c CredentialConfig) *sources.Secrets {
	return &sources.Secrets{ClientSecret: c.Client.Secret, PreviousClientSecret: c.Client.PreviousSecret, Password: c.Password}
}

// reloadSecrets re-reads the configuration on SIGHUP and whenever a file
// named by a _FILE variable changes, and swaps in new client secrets and
// passwords. A configuration that no longer loads changes nothing: the
// secrets in use stay, and the problems are logged. Tokens already issued
// stay in use; nothing is refreshed early.
// environ returns the variables to read again (see startEnviron).
func reloadSecrets(ctx context.Context, environ func() []string, creds []*live, log *slog.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	t := time.NewTicker(secretPoll)
	defer t.Stop()
	files := fileSettings(environ())
	seen := secretFiles(files)
	for {
		why := ""
		select {
		case <-ctx.Done():
			return
		case <-hup:
			why = "SIGHUP"
		case <-t.C:
			now := secretFiles(files)
			if slices.Equal(now, seen) {
				continue
			}
			seen, why = now, "a secret file changed"
		}
		cfg, err := loadFrom(environ())
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
		i := slices.IndexFunc(creds, func(l *live) bool { return l.name == cc.Name })
		if i < 0 {
			continue // a new credential needs a restart; see below
		}
		l := creds[i]
		was, now := l.Secrets(), secretsOf(cc)
		if !now.ClientSecret.Equal(was.ClientSecret) || !now.PreviousClientSecret.Equal(was.PreviousClientSecret) {
			log.Info("client secret reloaded; tokens in hand stay in use", "credential", cc.Name, "from", cc.Sources["CLIENT_SECRET"], "reason", why)
			changed++
		}
		if !now.Password.Equal(was.Password) { // config sets one for the password grant alone
			log.Info("password reloaded; tokens in hand stay in use", "credential", cc.Name, "from", cc.Sources["PASSWORD"], "reason", why)
			changed++
		}
		l.secrets.Store(now) // one swap: the next request sees all of them new
		if !cc.RefreshToken.Equal(l.refreshToken) {
			log.Warn("the configured refresh token changed; it is used after a restart, or now with tokenbroker authorize", "credential", cc.Name)
			l.refreshToken = cc.RefreshToken
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
func secretFiles(paths []string) []string {
	var out []string
	for _, path := range paths {
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

// loadFrom loads the configuration from environ. envconfig reads only the
// process environment, which serve keeps free of TOKENBROKER_ variables
// (shedOwnVariables): they are set for the load and unset after it. Unset
// one by one, not cleared, since other goroutines may read the rest.
func loadFrom(environ []string) (Config, error) {
	if err := setEnviron(environ); err != nil {
		return Config{}, err
	}
	defer func() {
		for _, kv := range os.Environ() {
			if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, config.Prefix+"_") {
				os.Unsetenv(k)
			}
		}
	}()
	return config.Load()
}

// fileSettings returns the paths that the variables naming files the
// configuration reads (config.FileVariables) hold in environ.
func fileSettings(environ []string) []string {
	vars := map[string]string{}
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(k, config.Prefix+"_") {
			vars[k] = v
		}
	}
	var names []string
	for _, n := range strings.Split(vars[config.Prefix+"_CREDENTIALS"], ",") {
		if n = strings.TrimSpace(n); n != "" {
			names = append(names, n)
		}
	}
	var paths []string
	for _, k := range config.FileVariables(names) {
		if path, ok := vars[k]; ok {
			paths = append(paths, path)
		}
	}
	return paths
}

// startEnviron returns the environment the daemon was started with, for a
// reload to read again. On Linux it is read from /proc/self/environ when a
// reload needs it, not kept: at 5,000 credentials a copy of 30,000
// variables is half a megabyte held for a rare event. Elsewhere, a copy.
func startEnviron() func() []string {
	if _, err := os.Stat("/proc/self/environ"); err != nil {
		env := os.Environ()
		return func() []string { return env }
	}
	return func() []string {
		b, err := os.ReadFile("/proc/self/environ")
		if err != nil {
			return nil // the reload then reports no credentials, and changes nothing
		}
		return strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
	}
}
