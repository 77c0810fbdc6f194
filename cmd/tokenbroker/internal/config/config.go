// Package config reads tokenbroker's configuration from the process
// environment, once, at the edge, into plain structs; nothing below cmd
// reads the environment, and only this package names its variables.
//
// The settings are declared once, as tagged structs (settings.go) that
// envconfig decodes; Load then validates the decoded values and reports
// every problem at once, each naming its variable, never a secret.
package config

import (
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tokenbroker/tokenbroker/api"
	"github.com/tokenbroker/tokenbroker/api/tokenfile"
	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/sources"
)

// Prefix begins every variable tokenbroker reads.
const Prefix = "TOKENBROKER"

// Config is the broker's resolved configuration.
type Config struct {
	Socket   string
	StateDir string
	LogLevel slog.Level
	// LogFormat is "text", "json", or "" when TOKENBROKER_LOG_FORMAT is unset
	// (main picks text on a terminal, json otherwise).
	LogFormat string

	RefreshAt           float64
	RequestTimeout      time.Duration
	AnswerTimeout       time.Duration // the wait for a sent refresh's answer
	HandoutWait         time.Duration
	BackoffMax          time.Duration
	ProbeInterval       time.Duration // one request per interval to a failing provider
	ProviderConcurrency int

	// Redis, when not nil, makes this broker a member of a fleet sharing
	// tokens through Redis (one server, Sentinel or Cluster); nil means the
	// embedded store alone.
	Redis       *redis.UniversalOptions
	RedisPrefix string
	// RedisLockTTL is the refresh lock's lease: how long a fleet waits for
	// a broker that died holding it.
	RedisLockTTL time.Duration
	// EncryptionKeys seal stored records (the first one seals, all open);
	// none means plaintext storage.
	EncryptionKeys []broker.SealKey

	// MetricsAddr, when set, serves /metrics over TCP there too.
	MetricsAddr string
	// MetricsPerCredential counts handouts and refreshes per credential too.
	MetricsPerCredential bool
	// SocketMode is the socket's mode; SocketGID its group (0 means the
	// broker's).
	SocketMode os.FileMode
	SocketGID  int
	// Access is the default for who may fetch tokens; a credential's own
	// lists replace it.
	Access api.Access
	// CrashAt makes serve kill itself at a refresh step: crash tests only.
	CrashAt string

	Credentials []Credential
	// Warnings are problems that do not stop the broker, one line each,
	// naming the variable. Load fills them even when it fails.
	Warnings []string
}

// Credential is one credential as configured.
type Credential struct {
	Name     string
	Provider string // preset name: firework, livepush, ingest, vsrs, generic
	Grant    sources.Grant
	Dialect  sources.Dialect // the preset with TOKEN_URL and the generic knobs applied
	Client   sources.Client
	Username string

	Password     sources.Secret
	RefreshToken sources.Secret // the operator's initial refresh token
	// Access says who may fetch this credential's token (the global lists
	// unless its own are set).
	Access api.Access
	// Sources says where each secret came from, keyed by setting
	// (CLIENT_SECRET, REFRESH_TOKEN, PASSWORD, CLIENT_SECRET_PREVIOUS): the
	// variable's name, or the file's path and the variable that named it.
	// Never the value.
	Sources map[string]string
	// TokenFile keeps the current token in a file when its Path is set.
	TokenFile tokenfile.File
}

// Fingerprint is what makes the credential the same one for the store.
func (c Credential) Fingerprint() string {
	return broker.Fingerprint(c.Dialect.TokenURL, c.Client.ID, c.Grant, c.Client.Scopes, c.Username)
}

// Load reads the configuration from the process environment. The error
// joins every problem found, one per line. A blank value counts as unset.
// The returned Config carries the warnings even when the error is not nil.
func Load() (Config, error) {
	p := &problems{}
	var g Global
	var r Redis
	decode(p, Prefix, &g)
	decode(p, Prefix, &r)
	c := Config{
		LogFormat:           g.LogFormat.V,
		RefreshAt:           g.RefreshAt.V,
		RequestTimeout:      g.RequestTimeout.V,
		AnswerTimeout:       g.AnswerTimeout.V,
		HandoutWait:         g.HandoutWait.V,
		BackoffMax:          g.BackoffMax.V,
		ProbeInterval:       g.ProbeInterval.V,
		ProviderConcurrency: g.ProviderConcurrency.V,
		SocketMode:          g.SocketMode.V,
		Access:              access(&g.AllowUids, &g.AllowGids),
		CrashAt:             g.TestCrashAt.V,

		MetricsPerCredential: g.MetricsPerCredential.V == "true",
	}
	if c.AnswerTimeout > 0 && c.AnswerTimeout < c.RequestTimeout { // 0: reported by decode
		p.errorf(Prefix+"_ANSWER_TIMEOUT", "%s is shorter than TOKENBROKER_REQUEST_TIMEOUT (%s); set it longer: it bounds the wait for a sent refresh's answer", c.AnswerTimeout, c.RequestTimeout)
	}
	_ = c.LogLevel.UnmarshalText([]byte(g.LogLevel.V)) // a word check accepted, or "" (reported)
	loadPaths(p, &g, &c)
	loadSocketAccess(p, &g, &c)
	loadEncryptionKeys(p, &g, &c)
	loadRedis(p, &r, &c)

	names := parseNames(p, g.Credentials.V)
	scan(p, environ(), names)
	for _, n := range names {
		if cc, ok := loadCredential(p, n, c.Access); ok {
			c.Credentials = append(c.Credentials, cc)
		}
	}
	checkTokenFiles(p, c)
	checkEnvironSize(p, os.Environ())
	c.Warnings = p.warnings
	return c, p.err()
}

// environ is the process environment as a map. The first entry for a name
// wins, as with getenv(3).
func environ() map[string]string {
	m := map[string]string{}
	for _, kv := range os.Environ() {
		k, v, ok := strings.Cut(kv, "=")
		if _, dup := m[k]; ok && k != "" && !dup {
			m[k] = v
		}
	}
	return m
}

// Linux refuses an exec whose arguments and environment pass a quarter of
// the stack limit: 2 MiB with the usual 8 MiB. A restart, a systemd unit or
// a shell that runs the broker then fails with "argument list too long".
const execLimit = 2 << 20

// checkEnvironSize warns when the environment passes three quarters of
// execLimit, counted as the kernel does: each string with its NUL, and a
// pointer to it.
func checkEnvironSize(p *problems, environ []string) {
	n := 0
	for _, kv := range environ {
		n += len(kv) + 1 + 8
	}
	if n >= execLimit*3/4 {
		p.warnf(Prefix+"_CREDENTIALS", "the environment is %d KiB, %d%% of the %d KiB Linux allows an exec's environment and arguments, so a restart may fail with \"argument list too long\"; move secrets into files (TOKENBROKER_<NAME>_CLIENT_SECRET_FILE and the other _FILE settings), which shrinks each credential's share",
			n>>10, n*100/execLimit, execLimit>>10)
	}
}
