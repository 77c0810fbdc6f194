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
	"path/filepath"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tokenbroker/tokenbroker/api"
	"github.com/tokenbroker/tokenbroker/api/client"
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
		RefreshAt:           g.RefreshAt.V,
		RequestTimeout:      g.RequestTimeout.V,
		AnswerTimeout:       g.AnswerTimeout.V,
		HandoutWait:         g.HandoutWait.V,
		BackoffMax:          g.BackoffMax.V,
		ProbeInterval:       g.ProbeInterval.V,
		ProviderConcurrency: g.ProviderConcurrency.V,
		CrashAt:             g.TestCrashAt.V,

		MetricsPerCredential: g.MetricsPerCredential.V,
	}
	if c.AnswerTimeout < c.RequestTimeout {
		p.errorf(Prefix+"_ANSWER_TIMEOUT", "%s is shorter than TOKENBROKER_REQUEST_TIMEOUT (%s); set it longer: it bounds the wait for a sent refresh's answer", c.AnswerTimeout, c.RequestTimeout)
	}
	loadPaths(p, &g, &c)
	loadLog(p, &g, &c)
	loadAccess(p, &g, &c)
	loadEncryptionKeys(p, &g, &c)
	loadRedis(p, &r, &c)

	names := parseNames(p, g.Credentials.V)
	scan(p, environ(), names)
	for _, n := range names {
		if cc, ok := loadCredential(p, n, c.Access); ok {
			c.Credentials = append(c.Credentials, cc)
		}
	}
	checkEnvironSize(p, os.Environ())
	c.Warnings = p.warnings
	return c, p.err()
}

// loadPaths sets the socket and the state directory, or their defaults.
func loadPaths(p *problems, g *Global, c *Config) {
	uid := os.Geteuid()
	c.Socket = g.Socket.V
	if c.Socket == "" {
		c.Socket = client.SocketFor(uid, os.Getenv)
	}
	checkSocket(p, c.Socket, !g.Socket.set())
	name := Prefix + "_STATE_DIR"
	switch d, ok := DefaultStateDir(uid, os.Getenv); {
	case g.StateDir.set():
		if !filepath.IsAbs(g.StateDir.V) {
			p.errorf(name, "%s is not an absolute path; use one, e.g. /var/lib/tokenbroker", show(g.StateDir.V))
		}
		c.StateDir = filepath.Clean(g.StateDir.V)
	case ok:
		c.StateDir = d
	default:
		p.errorf(name, "not set, and neither XDG_STATE_HOME nor HOME is an absolute path to derive it from; set it")
	}
}

// maxSocketPathLen: sun_path is 108 bytes on Linux, with the NUL.
const maxSocketPathLen = 107

func checkSocket(p *problems, path string, isDefault bool) {
	name, what := Prefix+"_SOCKET", show(path)
	if isDefault {
		what = "the default " + what
	}
	if !filepath.IsAbs(path) {
		p.errorf(name, "%s is not an absolute path; use one, e.g. /run/tokenbroker/tokenbroker.sock", what)
	}
	if len(path) > maxSocketPathLen {
		p.errorf(name, "%s is %d bytes long, more than a Unix socket path may be (%d); set a shorter path", what, len(path), maxSocketPathLen)
	}
}

// DefaultStateDir is the state directory when TOKENBROKER_STATE_DIR is
// unset. Relative XDG paths are ignored, as the XDG spec says.
func DefaultStateDir(uid int, getenv func(string) string) (string, bool) {
	if uid == 0 {
		return "/var/lib/tokenbroker", true
	}
	if d := getenv("XDG_STATE_HOME"); filepath.IsAbs(d) {
		return filepath.Join(d, "tokenbroker"), true
	}
	if h := getenv("HOME"); filepath.IsAbs(h) {
		return filepath.Join(h, ".local", "state", "tokenbroker"), true
	}
	return "", false
}

func loadLog(p *problems, g *Global, c *Config) {
	switch v := strings.ToLower(g.LogLevel.V); v {
	case "debug":
		c.LogLevel = slog.LevelDebug
	case "info":
		c.LogLevel = slog.LevelInfo
	case "warn", "warning":
		c.LogLevel = slog.LevelWarn
	case "error":
		c.LogLevel = slog.LevelError
	default:
		p.errorf(Prefix+"_LOG_LEVEL", "%s is not a log level; use debug, info, warn or error", show(g.LogLevel.V))
	}
	switch v := strings.ToLower(g.LogFormat.V); v {
	case "", "text", "json":
		c.LogFormat = v
	default:
		p.errorf(Prefix+"_LOG_FORMAT", "%s is not a log format; use text or json, or leave it unset (text on a terminal, json otherwise)", show(g.LogFormat.V))
	}
}
