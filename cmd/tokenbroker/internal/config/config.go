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
	"reflect"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tokenbroker/tokenbroker/api"
	"github.com/tokenbroker/tokenbroker/api/tokenfile"
	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/broker/store/seal"
	"github.com/tokenbroker/tokenbroker/sources"
)

// Prefix begins every variable tokenbroker reads.
const Prefix = "TOKENBROKER"

// Config is the broker's resolved configuration. A field named as a
// setting holds its value (settings.go says what each means).
type Config struct {
	Socket    string
	StateDir  string
	LogLevel  slog.Level
	LogFormat string // "" when unset: main picks text on a terminal, json otherwise

	RefreshAt           float64
	RequestTimeout      time.Duration
	AnswerTimeout       time.Duration
	HandoutWait         time.Duration
	BackoffMax          time.Duration
	ProbeInterval       time.Duration
	ProviderConcurrency int

	Redis        *redis.UniversalOptions // nil: the embedded store alone
	RedisPrefix  string
	RedisLockTTL time.Duration
	// EncryptionKeys seal stored records (the first seals, all open); none
	// means plaintext.
	EncryptionKeys []seal.SealKey

	MetricsAddr          string
	MetricsPerCredential bool
	SocketMode           os.FileMode
	SocketGID            int        // 0: the broker's group
	Access               api.Access // who may fetch tokens, unless a credential says
	CrashAt              string     // TEST_CRASH_AT: crash tests only

	Credentials []Credential
	// Warnings are problems that do not stop the broker, one line each,
	// naming the variable. Load fills them even when it fails.
	Warnings []string
}

// Credential is one credential as configured.
type Credential struct {
	Name     string
	Provider string          // preset name: firework, livepush, ingest, vsrs, generic
	Grant    sources.Grant   // as set, or inferred from what is set
	Dialect  sources.Dialect // the preset with the credential's settings applied
	Client   sources.Client
	Username string

	Password     sources.Secret
	RefreshToken sources.Secret // the operator's initial refresh token
	Access       api.Access     // its own lists, or the global ones
	Upstream     api.Upstream   // where the proxy forwards; its URL is nil when unset
	// Sources says where each secret came from, keyed by setting
	// (CLIENT_SECRET, REFRESH_TOKEN, ...): the variable, or the file and
	// the variable that named it. Never the value.
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
	var c Config
	copyValues(&c, &g)
	copyValues(&c, &r)
	c.MetricsPerCredential, c.CrashAt = g.MetricsPerCredential.V == "true", g.TestCrashAt.V
	_ = c.LogLevel.UnmarshalText([]byte(g.LogLevel.V))             // a word check accepted, or "" (reported)
	if c.AnswerTimeout > 0 && c.AnswerTimeout < c.RequestTimeout { // 0: reported by decode
		p.errorf(Prefix+"_ANSWER_TIMEOUT", "%s is shorter than TOKENBROKER_REQUEST_TIMEOUT (%s); set it longer: it bounds the wait for a sent refresh's answer", c.AnswerTimeout, c.RequestTimeout)
	}
	loadPaths(p, &g, &c)
	loadAccess(p, &g, &c)
	loadRedis(p, &r, &c)
	names := parseNames(p, g.Credentials.V)
	scan(p, names)
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

// copyValues sets each field of *dst that a Value field of *src of the same
// name and type holds, so that a new setting is one field in each struct.
func copyValues(dst, src any) {
	d, s := reflect.ValueOf(dst).Elem(), reflect.ValueOf(src).Elem()
	for i := range s.NumField() {
		to, v := d.FieldByName(s.Type().Field(i).Name), s.Field(i).FieldByName("V")
		if to.IsValid() && v.IsValid() && v.Type() == to.Type() {
			to.Set(v)
		}
	}
}

// Linux refuses an exec whose arguments and environment pass a quarter of
// the stack limit: 2 MiB with the usual 8 MiB. A restart, a systemd unit or
// a shell that runs the broker then fails with "argument list too long".
const execLimit = 2 << 20

// checkEnvironSize warns past three quarters of execLimit, counting as the
// kernel does: each string with its NUL, and a pointer to it.
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
