package main

// Configuration comes from the environment only: one place to read in a
// systemd unit, a container spec or a shell. loadConfig reads it once, at
// the edge, into plain structs; nothing below cmd reads the environment.
//
// Why not envconfig: loadConfig must report every problem at once, each
// naming its full variable; envconfig stops at the first error. It reads only
// the process environment, so tests and the fuzz target would have to mutate
// global state (t.Setenv forbids t.Parallel and is a poor fit for fuzzing).
// And two checks we need, unknown suffixes for a listed credential and
// variables for a credential that is not listed, require scanning every
// TOKENBROKER_ variable, which envconfig cannot do. What it would add, a
// struct tag per field, is less than the table below gives, so loadConfig
// parses a []string environment with small helpers and collects every
// problem.

import (
	"cmp"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"
	"golang.org/x/oauth2"

	"github.com/tokenbroker/tokenbroker/api"
	"github.com/tokenbroker/tokenbroker/api/client"
	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/sources"
)

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
	AnswerTimeout       time.Duration
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
	// SocketMode is the socket's mode (0 means api.DefaultMode); SocketGID
	// its group (0 means the broker's).
	SocketMode os.FileMode
	SocketGID  int
	// Access is the default for who may fetch tokens; a credential's own
	// lists replace it.
	Access api.Access

	Credentials []CredentialConfig
	// environ is what the configuration was read from, to read it again
	// when secrets change. A pointer, so that printing a Config never
	// prints the environment's secrets.
	environ *[]string
	// Warnings are problems that do not stop the broker, one line each,
	// naming the variable. loadConfig fills them even when it fails.
	Warnings []string
}

// CredentialConfig is one credential as configured.
type CredentialConfig struct {
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
	// (CLIENT_SECRET, REFRESH_TOKEN, PASSWORD): the variable's name, or the
	// file's path and the variable that named it. Never the value.
	Sources map[string]string
}

const envPrefix = "TOKENBROKER_"

// Global settings, by suffix after TOKENBROKER_.
const (
	varSocket              = "SOCKET"
	varStateDir            = "STATE_DIR"
	varCredentials         = "CREDENTIALS"
	varLogLevel            = "LOG_LEVEL"
	varLogFormat           = "LOG_FORMAT"
	varRefreshAt           = "REFRESH_AT"
	varRequestTimeout      = "REQUEST_TIMEOUT"
	varAnswerTimeout       = "ANSWER_TIMEOUT"
	varHandoutWait         = "HANDOUT_WAIT"
	varBackoffMax          = "BACKOFF_MAX"
	varProbeInterval       = "PROBE_INTERVAL"
	varProviderConcurrency = "PROVIDER_CONCURRENCY"
	varRedisURL            = "REDIS_URL"
	varRedisPrefix         = "REDIS_PREFIX"
	varRedisLockTTL        = "REDIS_LOCK_TTL"
	varEncryptionKey       = "ENCRYPTION_KEY"
	varRedisAddrs          = "REDIS_ADDRS"
	varRedisSentinelMaster = "REDIS_SENTINEL_MASTER"
	varRedisUsername       = "REDIS_USERNAME"
	varRedisPassword       = "REDIS_PASSWORD"
	varRedisCAFile         = "REDIS_CA_FILE"
)

// globalVars are the TOKENBROKER_ variables that belong to no credential.
// Add here any TOKENBROKER_ variable that main reads itself, or the typo
// guard warns about it.
var globalVars = []string{
	varSocket, varStateDir, varCredentials, varLogLevel, varLogFormat,
	varRefreshAt, varRequestTimeout, varAnswerTimeout, varHandoutWait, varBackoffMax, varProbeInterval, varProviderConcurrency,
	varRedisURL, varRedisPrefix, varRedisLockTTL, varEncryptionKey, varEncryptionKey + fileSuffix,
	varRedisAddrs, varRedisSentinelMaster, varRedisUsername, varRedisPassword, varRedisPassword + fileSuffix, varRedisCAFile,
	varMetricsAddr, varMetricsPerCredential, varSocketMode, varSocketGroup, varAllowUIDs, varAllowGIDs, varTestCrashAt,
}

// varTestCrashAt makes serve kill itself at a refresh step: crash tests only.
const varTestCrashAt = "TEST_CRASH_AT"

// Per-credential settings, by suffix after TOKENBROKER_<NAME>_.
const (
	sfxProvider           = "PROVIDER"
	sfxGrant              = "GRANT"
	sfxTokenURL           = "TOKEN_URL"
	sfxAuthorizeURL       = "AUTHORIZE_URL"
	sfxClientID           = "CLIENT_ID"
	sfxClientSecret       = "CLIENT_SECRET"
	sfxScopes             = "SCOPES"
	sfxRefreshToken       = "REFRESH_TOKEN"
	sfxUsername           = "USERNAME"
	sfxPassword           = "PASSWORD"
	sfxRedirectURI        = "REDIRECT_URI"
	sfxMethod             = "METHOD"
	sfxParams             = "PARAMS"
	sfxClientAuth         = "CLIENT_AUTH"
	sfxScopeSeparator     = "SCOPE_SEPARATOR"
	sfxHeaders            = "HEADERS"
	sfxLifetimeField      = "LIFETIME_FIELD"
	sfxTokenTypes         = "TOKEN_TYPES"
	sfxRefreshSendsSecret = "REFRESH_SENDS_SECRET"
	sfxRefreshSendsRedir  = "REFRESH_SENDS_REDIRECT_URI"
	sfxDefaultLifetime    = "DEFAULT_LIFETIME"
	sfxPreviousSecret     = "CLIENT_SECRET_PREVIOUS"
	fileSuffix            = "_FILE"
)

// secretSettings may also be given as a file, with fileSuffix.
var secretSettings = []string{sfxClientSecret, sfxRefreshToken, sfxPassword, sfxPreviousSecret}

var credentialSettings = []string{
	sfxProvider, sfxGrant, sfxTokenURL, sfxAuthorizeURL, sfxClientID, sfxClientSecret, sfxScopes,
	sfxRefreshToken, sfxUsername, sfxPassword, sfxRedirectURI,
	sfxMethod, sfxParams, sfxClientAuth, sfxScopeSeparator, sfxHeaders, sfxLifetimeField,
	sfxTokenTypes, sfxRefreshSendsSecret, sfxRefreshSendsRedir, sfxDefaultLifetime,
	sfxClientSecret + fileSuffix, sfxRefreshToken + fileSuffix, sfxPassword + fileSuffix,
	sfxPreviousSecret, sfxPreviousSecret + fileSuffix, varAllowUIDs, varAllowGIDs,
}

// Limits.
const (
	maxNameLen       = 64
	maxSocketPathLen = 107 // sun_path is 108 bytes on Linux, with the NUL
	maxSecretFile    = 64 << 10
)

// problems collects every error and warning, each one line that names the
// variable: "TOKENBROKER_X_Y: what is wrong; what to do".
type problems struct {
	errs     []error
	warnings []string
}

func (p *problems) errorf(variable, format string, args ...any) {
	p.errs = append(p.errs, fmt.Errorf("%s: %s", printable(variable), fmt.Sprintf(format, args...)))
}

func (p *problems) warnf(variable, format string, args ...any) {
	p.warnings = append(p.warnings, printable(variable)+": "+fmt.Sprintf(format, args...))
}

// loadConfig reads the configuration from environ ("KEY=value" entries, as
// os.Environ returns). The error joins every problem found, one per line.
// An empty value counts as unset. The returned Config carries the warnings
// even when the error is not nil.
func loadConfig(environ []string) (Config, error) {
	vars := environMap(environ)
	getenv := func(k string) string { return vars[k] }
	p := &problems{}
	uid := os.Geteuid()

	c := Config{
		environ:             &environ,
		LogLevel:            slog.LevelInfo,
		RefreshAt:           0.85,
		RequestTimeout:      30 * time.Second,
		AnswerTimeout:       5 * time.Minute,
		HandoutWait:         5 * time.Second,
		BackoffMax:          5 * time.Minute,
		ProbeInterval:       5 * time.Second,
		ProviderConcurrency: 4,
	}
	g := func(s string) (name, value string, ok bool) {
		name = envPrefix + s
		v := strings.TrimSpace(vars[name])
		return name, v, v != ""
	}

	if name, v, ok := g(varSocket); ok {
		c.Socket = v
		checkSocket(p, name, v, false)
	} else {
		c.Socket = client.SocketFor(uid, getenv)
		checkSocket(p, name, c.Socket, true)
	}
	if name, v, ok := g(varStateDir); ok {
		if !filepath.IsAbs(v) {
			p.errorf(name, "%s is not an absolute path; use one, e.g. /var/lib/tokenbroker", show(v))
		}
		c.StateDir = filepath.Clean(v)
	} else if d, ok := defaultStateDir(uid, getenv); ok {
		c.StateDir = d
	} else {
		p.errorf(name, "not set, and neither XDG_STATE_HOME nor HOME is an absolute path to derive it from; set it")
	}
	if name, v, ok := g(varLogLevel); ok {
		switch strings.ToLower(v) {
		case "debug":
			c.LogLevel = slog.LevelDebug
		case "info":
			c.LogLevel = slog.LevelInfo
		case "warn", "warning":
			c.LogLevel = slog.LevelWarn
		case "error":
			c.LogLevel = slog.LevelError
		default:
			p.errorf(name, "%s is not a log level; use debug, info, warn or error", show(v))
		}
	}
	if name, v, ok := g(varLogFormat); ok {
		switch strings.ToLower(v) {
		case "text", "json":
			c.LogFormat = strings.ToLower(v)
		default:
			p.errorf(name, "%s is not a log format; use text or json, or leave it unset (text on a terminal, json otherwise)", show(v))
		}
	}
	if name, v, ok := g(varRefreshAt); ok {
		f, err := strconv.ParseFloat(v, 64)
		switch {
		case err != nil:
			p.errorf(name, "%s is not a number; use a fraction of the token lifetime between 0.5 and 0.95, e.g. 0.85", show(v))
		case !(f >= 0.5 && f <= 0.95): // also rejects NaN
			p.errorf(name, "%s is outside 0.5 to 0.95; use a fraction of the token lifetime in that range, e.g. 0.85", show(v))
		default:
			c.RefreshAt = f
		}
	}
	parseDuration(p, vars, envPrefix+varRequestTimeout, &c.RequestTimeout, time.Second, time.Hour)
	parseDuration(p, vars, envPrefix+varAnswerTimeout, &c.AnswerTimeout, time.Second, 24*time.Hour)
	if c.AnswerTimeout < c.RequestTimeout {
		p.errorf(envPrefix+varAnswerTimeout, "%s is shorter than TOKENBROKER_REQUEST_TIMEOUT (%s); set it longer: it bounds the wait for a sent refresh's answer", c.AnswerTimeout, c.RequestTimeout)
	}
	parseDuration(p, vars, envPrefix+varHandoutWait, &c.HandoutWait, time.Millisecond, 5*time.Minute)
	parseDuration(p, vars, envPrefix+varBackoffMax, &c.BackoffMax, time.Second, 24*time.Hour)
	parseDuration(p, vars, envPrefix+varProbeInterval, &c.ProbeInterval, time.Second, 10*time.Minute)
	if name, v, ok := g(varProviderConcurrency); ok {
		n, err := strconv.Atoi(v)
		switch {
		case err != nil:
			p.errorf(name, "%s is not a whole number; use how many refreshes may run at once per provider, e.g. 4", show(v))
		case n < 1 || n > 1024:
			p.errorf(name, "%d is outside 1 to 1024; use how many refreshes may run at once per provider, e.g. 4", n)
		default:
			c.ProviderConcurrency = n
		}
	}

	loadRedis(p, vars, &c)
	c.RedisPrefix = "tokenbroker:"
	c.RedisLockTTL = 15 * time.Second
	parseDuration(p, vars, envPrefix+varRedisLockTTL, &c.RedisLockTTL, time.Second, 5*time.Minute)
	if _, v, ok := g(varRedisPrefix); ok {
		c.RedisPrefix = v
	}

	loadEncryptionKeys(p, vars, &c)
	loadAccess(p, vars, &c)

	names := parseNames(p, vars[envPrefix+varCredentials])
	owned := partition(p, vars, names)
	for _, n := range names {
		if cc, ok := loadCredential(p, owned[n]); ok {
			if a := readAccess(p, vars, owned[n].prefix); a.Set {
				cc.Access = a
			} else {
				cc.Access = c.Access
			}
			c.Credentials = append(c.Credentials, cc)
		}
	}
	c.Warnings = p.warnings
	if len(p.errs) > 0 {
		return c, errors.Join(p.errs...)
	}
	return c, nil
}

// environMap turns "KEY=value" entries into a map. The first entry for a key
// wins, as with getenv(3).
func environMap(environ []string) map[string]string {
	m := make(map[string]string, len(environ))
	for _, kv := range environ {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			continue
		}
		if _, dup := m[k]; !dup {
			m[k] = v
		}
	}
	return m
}

// defaultStateDir is the state directory when TOKENBROKER_STATE_DIR is
// unset. Relative XDG paths are ignored, as the XDG spec says.
func defaultStateDir(uid int, getenv func(string) string) (string, bool) {
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

func checkSocket(p *problems, name, path string, isDefault bool) {
	what := show(path)
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

// parseDuration sets *d from the variable when it is set and valid.
func parseDuration(p *problems, vars map[string]string, name string, d *time.Duration, lo, hi time.Duration) {
	v := strings.TrimSpace(vars[name])
	if v == "" {
		return
	}
	if x, ok := durationIn(p, name, v, lo, hi); ok {
		*d = x
	}
}

func durationIn(p *problems, name, v string, lo, hi time.Duration) (time.Duration, bool) {
	x, err := time.ParseDuration(v)
	switch {
	case err != nil:
		p.errorf(name, "%s is not a duration; use a number with a unit, e.g. 30s, 5m or 1h30m", show(v))
	case x < lo || x > hi:
		p.errorf(name, "%s is outside %s to %s; use a duration in that range", show(v), lo, hi)
	default:
		return x, true
	}
	return 0, false
}

// parseNames reads TOKENBROKER_CREDENTIALS and returns the valid, distinct
// names in order.
func parseNames(p *problems, raw string) []string {
	name := envPrefix + varCredentials
	if strings.TrimSpace(raw) == "" {
		p.errorf(name, "not set; list the credentials to keep fresh, separated by commas, e.g. firework,ingest-main")
		return nil
	}
	var names []string
	byPrefix := map[string]string{}
	for i, n := range strings.Split(raw, ",") {
		n = strings.TrimSpace(n)
		switch {
		case n == "":
			p.errorf(name, "entry %d is empty; remove the extra comma", i+1)
			continue
		case len(n) > maxNameLen:
			p.errorf(name, "name %s is %d characters long; use at most %d", show(n), len(n), maxNameLen)
			continue
		case strings.ContainsFunc(n, unicodeSpace):
			p.errorf(name, "%s holds spaces; separate names with commas", show(n))
			continue
		case !validName(n):
			hint := "use only a-z, 0-9, _ and -"
			if validName(strings.ToLower(n)) {
				hint = fmt.Sprintf("use lower case: %s", strings.ToLower(n))
			}
			p.errorf(name, "name %s is not valid; %s", show(n), hint)
			continue
		case slices.Contains(names, n):
			p.errorf(name, "%s is listed twice; list each credential once", n)
			continue
		}
		pfx := credentialPrefix(n)
		if other, clash := byPrefix[pfx]; clash {
			p.errorf(name, "%s and %s both read the variables %s*; rename one", other, n, pfx)
			continue
		}
		byPrefix[pfx] = n
		names = append(names, n)
	}
	return names
}

func unicodeSpace(r rune) bool { return r == ' ' || r == '\t' || r == '\n' || r == '\r' }

func validName(n string) bool {
	if n == "" {
		return false
	}
	for _, r := range n {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}

// credentialPrefix is TOKENBROKER_<NAME>_, NAME upper-cased with - as _.
func credentialPrefix(name string) string {
	return envPrefix + strings.ReplaceAll(strings.ToUpper(name), "-", "_") + "_"
}

// credentialVars are the variables one credential owns, by setting.
type credentialVars struct {
	name, prefix string
	vals         map[string]string // setting suffix -> raw value, empty ones included
}

func (v *credentialVars) varName(setting string) string { return v.prefix + setting }

// raw returns a setting's value untrimmed; empty counts as unset.
func (v *credentialVars) raw(setting string) (string, bool) {
	s := v.vals[setting]
	return s, s != ""
}

// get returns a setting's value without surrounding spaces; empty counts as unset.
func (v *credentialVars) get(setting string) (string, bool) {
	s := strings.TrimSpace(v.vals[setting])
	return s, s != ""
}

// partition gives each TOKENBROKER_ variable to the listed credential that
// owns it. Unknown settings of a listed credential are errors; variables of
// an unlisted credential, and unknown variables, are warnings (a typo guard).
func partition(p *problems, vars map[string]string, names []string) map[string]*credentialVars {
	owned := make(map[string]*credentialVars, len(names))
	for _, n := range names {
		owned[n] = &credentialVars{name: n, prefix: credentialPrefix(n), vals: map[string]string{}}
	}
	keys := make([]string, 0, len(vars))
	for k := range vars {
		if strings.HasPrefix(k, envPrefix) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		rest := k[len(envPrefix):]
		if slices.Contains(globalVars, rest) {
			continue
		}
		var claims []*credentialVars
		var longest *credentialVars
		for _, n := range names {
			cv := owned[n]
			if !strings.HasPrefix(k, cv.prefix) {
				continue
			}
			if longest == nil || len(cv.prefix) > len(longest.prefix) {
				longest = cv
			}
			if slices.Contains(credentialSettings, k[len(cv.prefix):]) {
				claims = append(claims, cv)
			}
		}
		switch {
		case len(claims) == 1:
			claims[0].vals[k[len(claims[0].prefix):]] = vars[k]
		case len(claims) > 1:
			p.errorf(k, "is a setting of both credentials %s and %s; rename one of them", claims[0].name, claims[1].name)
		case longest != nil:
			p.errorf(k, "%s", unknownSetting(longest.name, longest.prefix, k[len(longest.prefix):]))
		default:
			p.warnf(k, "%s", strayVariable(rest, names))
		}
	}
	return owned
}

func unknownSetting(name, prefix, setting string) string {
	if base, ok := strings.CutSuffix(strings.ToUpper(setting), fileSuffix); ok && slices.Contains(credentialSettings, base) {
		return fmt.Sprintf("credential %s has no such setting: only %s can be read from a file; set %s%s directly",
			name, strings.Join(secretSettings, ", "), prefix, base)
	}
	if s := closest(setting, credentialSettings); s != "" {
		return fmt.Sprintf("credential %s has no such setting; did you mean %s%s?", name, prefix, s)
	}
	return fmt.Sprintf("credential %s has no such setting; its settings are %s", name, strings.Join(credentialSettings, ", "))
}

// strayVariable explains a TOKENBROKER_ variable that no listed credential
// owns. rest is the name after TOKENBROKER_.
func strayVariable(rest string, names []string) string {
	var setting string
	for _, s := range credentialSettings {
		if strings.HasSuffix(rest, "_"+s) && len(rest) > len(s)+1 && len(s) > len(setting) {
			setting = s
		}
	}
	if setting == "" {
		if s := closest(rest, globalVars); s != "" {
			return fmt.Sprintf("tokenbroker has no such setting and ignores it; did you mean %s%s?", envPrefix, s)
		}
		return "tokenbroker has no such setting and ignores it"
	}
	cred := rest[:len(rest)-len(setting)-1]
	msg := fmt.Sprintf("credential %s is not in %s%s, so this is ignored; add it there, or remove the variable",
		strings.ToLower(cred), envPrefix, varCredentials)
	upper := make([]string, len(names))
	for i, n := range names {
		upper[i] = strings.TrimSuffix(credentialPrefix(n)[len(envPrefix):], "_")
	}
	if i := slices.Index(upper, closest(cred, upper)); i >= 0 {
		msg += fmt.Sprintf(" (did you mean %s%s_%s, for %s?)", envPrefix, upper[i], setting, names[i])
	}
	return msg
}

// closest returns the candidate that s most likely misspells, or "".
func closest(s string, candidates []string) string {
	norm := func(x string) string { return strings.ReplaceAll(strings.ToUpper(x), "_", "") }
	best, bestD := "", 3 // at most two edits
	for _, c := range candidates {
		if norm(c) == norm(s) {
			return c
		}
		if d := editDistance(strings.ToUpper(s), c); d < bestD && d < len(c)/2 {
			best, bestD = c, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	if len(a) > 100 || len(b) > 100 {
		return 100
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

var keepGrants = []sources.Grant{sources.ClientCredentials, sources.RefreshToken, sources.Password}

// loadCredential validates one credential's variables. ok is false when
// any problem was reported for it.
func loadCredential(p *problems, v *credentialVars) (cc CredentialConfig, ok bool) {
	before := len(p.errs)
	cc = CredentialConfig{Name: v.name, Sources: map[string]string{}}

	// Provider.
	cc.Provider = "generic"
	providerOK := true
	if s, set := v.get(sfxProvider); set {
		cc.Provider = strings.ToLower(s)
		if !slices.Contains(sources.Providers(), cc.Provider) {
			p.errorf(v.varName(sfxProvider), "%s is not a known provider; use one of %s", show(s), strings.Join(sources.Providers(), ", "))
			providerOK = false
		}
	}

	// Secrets and the user.
	clientSecret := readSecret(p, v, sfxClientSecret)
	previous := readSecret(p, v, sfxPreviousSecret)
	refresh := readSecret(p, v, sfxRefreshToken)
	password := readSecret(p, v, sfxPassword)
	if previous.state == secretSet && clientSecret.state == secretUnset {
		p.errorf(previous.variable, "set without %s; the previous secret is only tried after the current one is refused, so set the current one too", v.varName(sfxClientSecret))
	}
	for _, rs := range []readSecretResult{clientSecret, previous, refresh, password} {
		if rs.state == secretSet {
			cc.Sources[rs.setting] = rs.from
		}
	}
	cc.RefreshToken, cc.Password = refresh.value, password.value
	// A refresh token whose file failed still says which grant was meant.
	hasRefresh := refresh.state != secretUnset
	if s, set := v.get(sfxUsername); set {
		cc.Username = s
		if hasControl(s) {
			p.errorf(v.varName(sfxUsername), "holds a control character; remove it")
		}
	}

	// Grant: set, or inferred from what is given.
	grantOK := true
	inferred := ""
	if s, set := v.get(sfxGrant); set {
		cc.Grant = sources.Grant(strings.ToLower(s))
		switch {
		case cc.Grant == sources.AuthorizationCode:
			p.errorf(v.varName(sfxGrant), "authorization_code cannot keep a token fresh on its own; run tokenbroker authorize %s once, then use refresh_token", v.name)
			grantOK = false
		case !slices.Contains(keepGrants, cc.Grant):
			p.errorf(v.varName(sfxGrant), "%s is not a grant tokenbroker runs; use client_credentials, refresh_token or password", show(s))
			grantOK = false
		}
	} else {
		switch {
		case hasRefresh && cc.Username != "":
			p.errorf(v.varName(sfxGrant), "not set, and both REFRESH_TOKEN and USERNAME are; set it to refresh_token or password")
			grantOK = false
		case hasRefresh:
			cc.Grant, inferred = sources.RefreshToken, "REFRESH_TOKEN is set"
		case cc.Username != "":
			cc.Grant, inferred = sources.Password, "USERNAME is set"
		default:
			cc.Grant, inferred = sources.ClientCredentials, "no REFRESH_TOKEN or USERNAME is set"
		}
	}

	// Dialect: the preset for (provider, grant), then the overrides.
	presetOK := false
	if providerOK && grantOK {
		d, err := sources.Preset(cc.Provider, cc.Grant)
		if err != nil {
			how := "set GRANT to one it offers, or check PROVIDER"
			if inferred != "" {
				how = fmt.Sprintf("the grant was chosen because %s; set GRANT to one the provider offers, or check PROVIDER", inferred)
			}
			p.errorf(v.varName(sfxGrant), "%v; %s", err, how)
			grantOK = false // what the grant would require is beside the point
		} else {
			cc.Dialect, presetOK = d, true
		}
	}
	applyKnobs(p, v, &cc.Dialect, cc.Grant)

	// Token URL.
	if s, set := v.get(sfxTokenURL); set {
		if checkTokenURL(p, v.varName(sfxTokenURL), s) {
			cc.Dialect.TokenURL = s
		}
	} else if presetOK && cc.Dialect.TokenURL == "" {
		p.errorf(v.varName(sfxTokenURL), "required: provider %s has no fixed token endpoint; set it to the server's token URL (https://...)", cc.Provider)
	}

	if s, set := v.get(sfxAuthorizeURL); set {
		if checkTokenURL(p, v.varName(sfxAuthorizeURL), s) {
			cc.Dialect.AuthorizeURL = s
		}
	}

	// Client.
	cc.Client.Secret = clientSecret.value
	cc.Client.PreviousSecret = previous.value
	if s, set := v.get(sfxClientID); set {
		cc.Client.ID = s
		if hasControl(s) {
			p.errorf(v.varName(sfxClientID), "holds a control character; remove it")
		}
	} else {
		p.errorf(v.varName(sfxClientID), "required; set it to the client id the provider issued")
	}
	if s, set := v.get(sfxScopes); set {
		cc.Client.Scopes = parseScopes(p, v.varName(sfxScopes), s)
	}
	if s, set := v.get(sfxRedirectURI); set {
		if u, err := url.Parse(s); err != nil || !u.IsAbs() || u.Host == "" && u.Opaque == "" {
			p.errorf(v.varName(sfxRedirectURI), "%s is not an absolute URI; set the redirect URI registered with the provider", show(s))
		} else {
			cc.Client.RedirectURI = s
		}
	}

	// What the grant requires, and what it would ignore.
	if grantOK {
		if cc.Grant == sources.ClientCredentials || cc.Grant == sources.Password {
			clientSecret.require(p, v, fmt.Sprintf("the %s grant", cc.Grant), "the client secret")
		}
		if cc.Grant == sources.RefreshToken && refresh.state == secretUnset {
			p.warnf(v.varName(sfxRefreshToken), "not set: the credential has no token until tokenbroker authorize %s stores one (or set it to a refresh token you have)", v.name)
		}
		if cc.Grant == sources.Password {
			if cc.Username == "" {
				p.errorf(v.varName(sfxUsername), "required for the password grant; set the resource owner's user name")
			}
			password.require(p, v, "the password grant", "the resource owner's password")
		}
		if refresh.state == secretSet && cc.Grant != sources.RefreshToken {
			p.errorf(refresh.variable, "set, but the %s grant does not use it; remove it, or set %s=refresh_token", cc.Grant, v.varName(sfxGrant))
		}
		if password.state == secretSet && cc.Grant != sources.Password {
			p.errorf(password.variable, "set, but the %s grant does not use it; remove it, or set %s for the password grant", cc.Grant, v.varName(sfxUsername))
		}
		if cc.Username != "" && cc.Grant == sources.ClientCredentials {
			p.errorf(v.varName(sfxUsername), "set, but the client_credentials grant does not use it; remove it, or set %s=password", v.varName(sfxGrant))
		}
		if presetOK && cc.Grant == sources.RefreshToken && cc.Dialect.RefreshSendsRedirect {
			if _, set := v.get(sfxRedirectURI); !set {
				p.errorf(v.varName(sfxRedirectURI), "required: provider %s sends redirect_uri on every refresh; set the redirect URI the refresh token was issued for", cc.Provider)
			}
		}
	}

	if len(p.errs) > before {
		return cc, false
	}
	// A backstop: every rule Validate knows is checked above with the
	// variable's name; anything left is a gap in this file.
	for _, err := range cc.Dialect.Validate() {
		p.errorf(v.prefix+"*", "%v", err)
	}
	return cc, len(p.errs) == before
}

type secretState int

const (
	secretUnset  secretState = iota
	secretSet                // read
	secretFailed             // set, but a problem was reported
)

// readSecretResult is one secret setting as read.
type readSecretResult struct {
	setting  string // CLIENT_SECRET, REFRESH_TOKEN, PASSWORD
	value    sources.Secret
	state    secretState
	from     string // for CredentialConfig.Sources
	variable string // the variable it came from, to blame
}

// require reports a secret the grant needs and nobody set. One that was set
// but failed has been reported already.
func (r readSecretResult) require(p *problems, v *credentialVars, grant, what string) {
	if r.state == secretUnset {
		p.errorf(v.varName(r.setting), "required for %s; set it, or %s%s to a file holding %s", grant, v.varName(r.setting), fileSuffix, what)
	}
}

// readSecret reads a secret setting from its variable or from the file its
// _FILE variable names. It never puts the value in a message.
func readSecret(p *problems, v *credentialVars, setting string) readSecretResult {
	r := readSecretResult{setting: setting, state: secretFailed}
	name, fileName := v.varName(setting), v.varName(setting+fileSuffix)
	// Trailing line breaks go, as from a file: a secret copied with its
	// line break is common.
	val, _ := v.raw(setting)
	val = strings.TrimRight(val, "\r\n")
	hasVal := val != ""
	path, hasFile := v.get(setting + fileSuffix)
	switch {
	case hasVal && hasFile:
		p.errorf(name, "set together with %s; set only one", fileName)
	case hasVal && hasControl(val):
		p.errorf(name, "holds a line break, a control character or invalid UTF-8 (value not shown); fix it")
	case hasVal:
		r.value, r.state, r.from, r.variable = sources.NewSecret(val), secretSet, name, name
	case hasFile:
		s, err := readSecretFile(path)
		if err != nil {
			p.errorf(fileName, "%v", err)
			break
		}
		r.value, r.state, r.from, r.variable = s, secretSet, fmt.Sprintf("file %s (%s)", path, fileName), fileName
	default:
		r.state = secretUnset
	}
	return r
}

// readSecretFile reads a secret from a file that only its owner may read.
// Only the trailing line breaks are removed.
func readSecretFile(path string) (sources.Secret, error) {
	shown := show(path)
	if !filepath.IsAbs(path) {
		// Not echoed: a secret pasted here by mistake would land in the log.
		return sources.Secret{}, errors.New("is not an absolute path (value not shown, in case it is the secret itself); set the full path of a file holding the secret")
	}
	f, err := os.Open(path)
	if err != nil {
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return sources.Secret{}, fmt.Errorf("%s does not exist; create it or fix the path", shown)
		case errors.Is(err, fs.ErrPermission):
			return sources.Secret{}, fmt.Errorf("%s cannot be read by this user (uid %d); give the broker's user read access (chown, chmod 600)", shown, os.Geteuid())
		}
		return sources.Secret{}, fmt.Errorf("%s cannot be opened: %v", shown, errors.Unwrap(err))
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return sources.Secret{}, fmt.Errorf("%s cannot be examined: %v", shown, errors.Unwrap(err))
	}
	if !st.Mode().IsRegular() {
		return sources.Secret{}, fmt.Errorf("%s is not a regular file; point it at the file holding the secret", shown)
	}
	// Group-readable is fine (a Kubernetes secret mounted with fsGroup is
	// 0440); readable by everyone, or writable by anyone else, is not.
	if perm := st.Mode().Perm(); perm&0o026 != 0 {
		what := "readable by every user"
		if perm&0o004 == 0 {
			what = "writable by other users"
		}
		return sources.Secret{}, fmt.Errorf("%s is %s (mode %04o); chmod 600 %s (or 640 to share it with a group)", shown, what, perm, path)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxSecretFile+1))
	if err != nil {
		return sources.Secret{}, fmt.Errorf("%s cannot be read: %v", shown, errors.Unwrap(err))
	}
	if len(b) > maxSecretFile {
		return sources.Secret{}, fmt.Errorf("%s is larger than %d KiB; point it at the file holding only the secret", shown, maxSecretFile>>10)
	}
	s := strings.TrimRight(string(b), "\r\n")
	if s == "" {
		return sources.Secret{}, fmt.Errorf("%s is empty; write the secret into it", shown)
	}
	if hasControl(s) {
		return sources.Secret{}, fmt.Errorf("%s holds more than one line or a control character; it must hold only the secret", shown)
	}
	return sources.NewSecret(s), nil
}

func checkTokenURL(p *problems, name, s string) bool {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		if err == nil && u.User != nil {
			p.errorf(name, "is not an http(s) URL; set the provider's token endpoint, e.g. https://auth.example.com/oauth/token")
		} else {
			p.errorf(name, "%s is not an http(s) URL; set the provider's token endpoint, e.g. https://auth.example.com/oauth/token", show(s))
		}
		return false
	}
	if u.User != nil {
		// Not echoed: the user info may hold a password.
		p.errorf(name, "holds a user name or password; remove them and use CLIENT_ID and CLIENT_SECRET")
		return false
	}
	if u.Fragment != "" {
		p.errorf(name, "%s has a #fragment; remove it", show(s))
		return false
	}
	if u.Scheme == "http" && !isLoopback(u.Hostname()) {
		p.warnf(name, "http:// to %s sends the client secret and tokens in clear; use https://", u.Hostname())
	}
	return true
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") || strings.HasSuffix(strings.ToLower(host), ".localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// parseScopes splits on commas and spaces, drops duplicates and checks each
// against RFC 6749 §3.3 (scope-token = 1*( %x21 / %x23-5B / %x5D-7E )).
func parseScopes(p *problems, name, s string) []string {
	var scopes []string
	for _, sc := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || unicodeSpace(r) }) {
		if slices.Contains(scopes, sc) {
			continue
		}
		valid := true
		for _, r := range sc {
			if r < 0x21 || r > 0x7e || r == '"' || r == '\\' {
				valid = false
			}
		}
		if !valid {
			p.errorf(name, "scope %s holds a character RFC 6749 does not allow (quote, backslash, or outside printable ASCII); fix it", show(sc))
			continue
		}
		scopes = append(scopes, sc)
	}
	return scopes
}

// defaultLifetimeFields is the order sources tries when a dialect names none.
var defaultLifetimeFields = []string{"expires_in", "token_expires_in"}

// applyKnobs applies the generic settings over the preset dialect d.
func applyKnobs(p *problems, v *credentialVars, d *sources.Dialect, g sources.Grant) {
	if s, set := v.get(sfxMethod); set {
		switch m := strings.ToUpper(s); m {
		case http.MethodGet, http.MethodPost:
			d.Method = m
		default:
			p.errorf(v.varName(sfxMethod), "%s is not GET or POST; use one of them", show(s))
		}
	}
	if s, set := v.get(sfxParams); set {
		switch pl := sources.Placement(strings.ToLower(s)); pl {
		case sources.InBody, sources.InQuery:
			d.Params = pl
		default:
			p.errorf(v.varName(sfxParams), "%s is not body or query; use one of them", show(s))
		}
	}
	if d.Method == http.MethodGet && d.Params == sources.InBody {
		p.errorf(v.varName(sfxParams), "body cannot go with a GET token endpoint; use query, or METHOD=POST")
	}
	if s, set := v.get(sfxClientAuth); set {
		switch strings.ToLower(s) {
		case "basic":
			d.ClientAuth = oauth2.AuthStyleInHeader
		case "params":
			d.ClientAuth = oauth2.AuthStyleInParams
		default:
			p.errorf(v.varName(sfxClientAuth), "%s is not basic or params; use basic (HTTP Basic) or params (client_id and client_secret as parameters)", show(s))
		}
	}
	if s, set := v.raw(sfxScopeSeparator); set {
		switch strings.ToLower(strings.Trim(s, "\t\r\n")) {
		case " ", "space":
			d.ScopeSeparator = " "
		case ",", "comma":
			d.ScopeSeparator = ","
		default:
			p.errorf(v.varName(sfxScopeSeparator), "%s is not a scope separator; use space or comma", show(s))
		}
	}
	if s, set := v.get(sfxHeaders); set {
		parseHeaders(p, v.varName(sfxHeaders), s, d)
	}
	if s, set := v.get(sfxLifetimeField); set {
		if strings.ContainsFunc(s, func(r rune) bool { return r <= ' ' || r == 0x7f || r == '"' }) {
			p.errorf(v.varName(sfxLifetimeField), "%s is not a JSON field name; set the field holding the lifetime in seconds, e.g. token_expires_in", show(s))
		} else {
			fields := d.LifetimeFields
			if len(fields) == 0 {
				fields = defaultLifetimeFields
			}
			d.LifetimeFields = append([]string{s}, slices.DeleteFunc(slices.Clone(fields), func(f string) bool { return f == s })...)
		}
	}
	if s, set := v.get(sfxTokenTypes); set {
		for _, tt := range strings.Split(s, ",") {
			tt = strings.TrimSpace(tt)
			switch {
			case tt == "":
			case strings.ContainsFunc(tt, func(r rune) bool { return r <= ' ' || r == 0x7f }):
				p.errorf(v.varName(sfxTokenTypes), "%s is not a token type; list token_type values separated by commas", show(tt))
			case !slices.ContainsFunc(d.TokenTypes, func(x string) bool { return strings.EqualFold(x, tt) }):
				d.TokenTypes = append(d.TokenTypes, tt)
			}
		}
	}
	for _, k := range []struct {
		setting string
		apply   func(bool)
	}{
		{sfxRefreshSendsSecret, func(b bool) { d.RefreshOmitsSecret = !b }},
		{sfxRefreshSendsRedir, func(b bool) { d.RefreshSendsRedirect = b }},
	} {
		s, set := v.get(k.setting)
		if !set {
			continue
		}
		b, ok := parseBool(s)
		if !ok {
			p.errorf(v.varName(k.setting), "%s is not true or false; use one of them", show(s))
			continue
		}
		k.apply(b)
		if g != "" && g != sources.RefreshToken {
			p.warnf(v.varName(k.setting), "has no effect with the %s grant; it applies to refresh_token", g)
		}
	}
	if s, set := v.get(sfxDefaultLifetime); set {
		if x, ok := durationIn(p, v.varName(sfxDefaultLifetime), s, time.Second, sources.MaxLifetime); ok {
			d.DefaultLifetime = x
		}
	}
}

// forbiddenHeaders are set by the exchange itself, or carry credentials
// that belong in CLIENT_AUTH and the secrets (and would show in check).
var forbiddenHeaders = []string{"Authorization", "Proxy-Authorization", "Cookie", "Host", "Content-Type", "Content-Length", "Transfer-Encoding"}

// parseHeaders reads "Name: value; Name2: value2" over d's headers.
func parseHeaders(p *problems, name, s string, d *sources.Dialect) {
	h := make(map[string]string, len(d.Headers))
	for k, val := range d.Headers {
		h[k] = val
	}
	for _, part := range strings.Split(s, ";") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		k, val, ok := strings.Cut(part, ":")
		k, val = strings.TrimSpace(k), strings.TrimSpace(val)
		switch {
		case !ok || k == "" || val == "":
			p.errorf(name, "%s is not \"Name: value\"; separate headers with ;", show(part))
			continue
		case !validHeaderName(k):
			p.errorf(name, "%s is not a valid header name; fix it", show(k))
			continue
		case hasControl(val):
			p.errorf(name, "the value of %s holds a control character; remove it", k)
			continue
		}
		k = http.CanonicalHeaderKey(k)
		if slices.Contains(forbiddenHeaders, k) {
			p.errorf(name, "%s cannot be set here: the broker sets it, or it carries credentials; use CLIENT_AUTH and CLIENT_SECRET", k)
			continue
		}
		h[k] = val
	}
	d.Headers = h
}

func validHeaderName(s string) bool {
	for _, r := range s {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			continue
		}
		if !strings.ContainsRune("!#$%&'*+-.^_`|~", r) {
			return false
		}
	}
	return s != ""
}

func parseBool(s string) (bool, bool) {
	switch strings.ToLower(s) {
	case "yes", "on":
		return true, true
	case "no", "off":
		return false, true
	}
	b, err := strconv.ParseBool(s)
	return b, err == nil
}

func hasControl(s string) bool {
	return strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f || r == utf8.RuneError })
}

// show quotes a non-secret value for a message, shortened, so that a stray
// control character cannot forge a line.
func show(s string) string {
	const max = 80
	if utf8.RuneCountInString(s) > max {
		s = string([]rune(s)[:max]) + "…"
	}
	return strconv.Quote(s)
}

// credential builds the broker's credential: the Source for the grant over
// an Endpoint in the credential's dialect, sending with hc.
func (c CredentialConfig) credential(hc *http.Client, log *slog.Logger) (broker.Credential, *live, error) {
	name, d := c.Name, c.Dialect // the closure and e keep these, not a copy of c
	e := &sources.Endpoint{Dialect: &d, Client: c.Client, HTTP: hc,
		Warn: func(msg string) { log.Warn(msg, "credential", name) }}
	src, err := sources.New(c.Grant, e, c.Username, c.Password)
	if err != nil {
		return broker.Credential{}, nil, fmt.Errorf("credential %s: %w", c.Name, err)
	}
	l := newLive(c, e, src)
	return broker.Credential{
		Name:                c.Name,
		Provider:            c.Provider,
		Endpoint:            c.Provider + " " + c.Dialect.TokenURL, // shares its health
		Source:              src,
		Fingerprint:         c.fingerprint(),
		InitialRefreshToken: c.RefreshToken,
	}, l, nil
}

// fingerprint names what makes a credential the same one: token URL, client
// id, grant, scopes (sorted) and subject. It is stable across scope order
// and holds no secret.
func (c CredentialConfig) fingerprint() string {
	scopes := slices.Clone(c.Client.Scopes)
	slices.Sort(scopes)
	scopes = slices.Compact(scopes)
	return url.Values{
		"token_url": {c.Dialect.TokenURL},
		"client_id": {c.Client.ID},
		"grant":     {string(c.Grant)},
		"scope":     {strings.Join(scopes, " ")},
		"subject":   {c.Username},
	}.Encode()
}

// checkKeyWidth aligns writeCheck's values.
const checkKeyWidth = 24

// writeCheck writes the resolved configuration for people: every default
// made explicit, every secret as [redacted] with where it came from.
func writeCheck(w io.Writer, c Config) {
	row := func(indent, k, format string, args ...any) {
		fmt.Fprintf(w, "%-*s %s\n", checkKeyWidth, indent+k, fmt.Sprintf(format, args...))
	}
	format := c.LogFormat
	if format == "" {
		format = "auto (text on a terminal, json otherwise)"
	}
	row("", "socket", "%s", printable(c.Socket))
	row("", "state dir", "%s", printable(c.StateDir))
	row("", "log", "level %s, format %s", strings.ToLower(c.LogLevel.String()), format)
	row("", "refresh at", "%g of a token's lifetime", c.RefreshAt)
	row("", "request timeout", "%s", c.RequestTimeout)
	row("", "handout wait", "%s", c.HandoutWait)
	row("", "backoff max", "%s", c.BackoffMax)
	row("", "probe interval", "%s", c.ProbeInterval)
	row("", "provider concurrency", "%d", c.ProviderConcurrency)
	if len(c.EncryptionKeys) == 0 {
		row("", "encryption", "%s", "NONE: stored tokens are plaintext (set TOKENBROKER_ENCRYPTION_KEY)")
	} else {
		ids := make([]string, len(c.EncryptionKeys))
		for i, k := range c.EncryptionKeys {
			ids[i] = k.ID
		}
		row("", "encryption", "AES-256-GCM, sealing with key %q, opening with %s", ids[0], strings.Join(ids, ", "))
	}
	row("", "socket access", "mode %04o%s; callers: %s", cmp.Or(c.SocketMode, api.DefaultMode), socketGroupNote(c.SocketGID), c.Access)
	if c.MetricsAddr != "" {
		row("", "metrics", "http://%s/metrics (and /metrics on the socket)", c.MetricsAddr)
	}
	if c.Redis == nil {
		row("", "store", "%s", "embedded (state dir only; set TOKENBROKER_REDIS_URL for a fleet)")
	} else {
		auth := "no password"
		if c.Redis.Password != "" {
			auth = "password [redacted]"
		}
		tlsOn := ""
		if c.Redis.TLSConfig != nil {
			tlsOn = ", TLS"
		}
		kind := "Redis " + strings.Join(c.Redis.Addrs, ",")
		switch {
		case c.Redis.MasterName != "":
			kind = fmt.Sprintf("Redis Sentinel master %q via %s", c.Redis.MasterName, strings.Join(c.Redis.Addrs, ","))
		case len(c.Redis.Addrs) > 1:
			kind = "Redis Cluster " + strings.Join(c.Redis.Addrs, ",")
		}
		row("", "store", "fleet: %s db %d (%s%s), prefix %q, lock lease %s, local copy in the state dir", kind, c.Redis.DB, auth, tlsOn, c.RedisPrefix, c.RedisLockTTL)
	}
	for _, cc := range c.Credentials {
		fmt.Fprintf(w, "\ncredential %s\n", cc.Name)
		d := &cc.Dialect
		const in = "  "
		row(in, "provider", "%s", cc.Provider)
		row(in, "grant", "%s", cc.Grant)
		row(in, "token URL", "%s", printable(d.TokenURL))
		row(in, "method", "%s", cmp.Or(d.Method, http.MethodPost))
		params := cmp.Or(d.Params, sources.InBody)
		if d.Method == http.MethodGet {
			params = sources.InQuery
		}
		row(in, "parameters", "%s", params)
		auth := "params (client_id and client_secret as parameters)"
		if d.ClientAuth == oauth2.AuthStyleInHeader {
			auth = "basic (HTTP Basic)"
		}
		row(in, "client auth", "%s", auth)
		sep := "space"
		if d.ScopeSeparator == "," {
			sep = "comma"
		}
		row(in, "scope separator", "%s", sep)
		row(in, "headers", "%s", headerList(d.Headers))
		fields := d.LifetimeFields
		if len(fields) == 0 {
			fields = defaultLifetimeFields
		}
		row(in, "lifetime fields", "%s", printable(strings.Join(fields, ", ")))
		row(in, "token types", "%s", printable(strings.Join(append([]string{"bearer"}, d.TokenTypes...), ", ")))
		row(in, "default lifetime", "%s", cmp.Or(d.DefaultLifetime, sources.DefaultLifetime))
		if cc.Grant == sources.RefreshToken {
			row(in, "refresh sends secret", "%t", !d.RefreshOmitsSecret)
			row(in, "refresh sends redirect", "%t", d.RefreshSendsRedirect)
		}
		row(in, "client id", "%s", printable(cc.Client.ID))
		row(in, "client secret", "%s", secretLine(cc.Client.Secret, cc.Sources[sfxClientSecret]))
		if !cc.Client.PreviousSecret.IsZero() {
			row(in, "previous secret", "%s, tried once when the current one is refused", secretLine(cc.Client.PreviousSecret, cc.Sources[sfxPreviousSecret]))
		}
		if cc.Access.Set {
			row(in, "callers", "%s", cc.Access)
		}
		row(in, "scopes", "%s", printable(cmp.Or(strings.Join(cc.Client.Scopes, " "), "(none)")))
		if cc.Client.RedirectURI != "" {
			row(in, "redirect URI", "%s", printable(cc.Client.RedirectURI))
		}
		if cc.Username != "" {
			row(in, "username", "%s", printable(cc.Username))
		}
		if cc.Grant == sources.Password || !cc.Password.IsZero() {
			row(in, "password", "%s", secretLine(cc.Password, cc.Sources[sfxPassword]))
		}
		if cc.Grant == sources.RefreshToken || !cc.RefreshToken.IsZero() {
			row(in, "refresh token", "%s", secretLine(cc.RefreshToken, cc.Sources[sfxRefreshToken]))
		}
	}
	if len(c.Warnings) > 0 {
		fmt.Fprintf(w, "\nwarnings:\n")
		for _, warn := range c.Warnings {
			fmt.Fprintf(w, "  %s\n", printable(warn))
		}
	}
}

func secretLine(s sources.Secret, from string) string {
	if s.IsZero() {
		return "(none)"
	}
	return fmt.Sprintf("%v from %s", s, printable(from))
}

func headerList(h map[string]string) string {
	if len(h) == 0 {
		return "(none)"
	}
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + ": " + h[k]
	}
	return printable(strings.Join(parts, "; "))
}

// printable keeps a value from the environment from writing control
// characters (escape sequences, line breaks) to a terminal.
func printable(s string) string {
	if !hasControl(s) {
		return s
	}
	q := strconv.Quote(s)
	return q[1 : len(q)-1]
}

// redactURLError keeps the parse error's kind without the URL it quotes.
func redactURLError(err error) string {
	msg := err.Error()
	if i := strings.LastIndex(msg, ": "); i >= 0 {
		msg = msg[i+2:]
	}
	if strings.Contains(msg, "@") || strings.Contains(msg, "//") {
		return "unparsable"
	}
	return msg
}

// loadEncryptionKeys reads TOKENBROKER_ENCRYPTION_KEY or its _FILE.
func loadEncryptionKeys(p *problems, vars map[string]string, c *Config) {
	name, fileName := envPrefix+varEncryptionKey, envPrefix+varEncryptionKey+fileSuffix
	v, path := strings.TrimSpace(vars[name]), strings.TrimSpace(vars[fileName])
	switch {
	case v != "" && path != "":
		p.errorf(name, "set both it and %s; keep one", fileName)
		return
	case path != "":
		sec, err := readSecretFile(path)
		if err != nil {
			p.errorf(fileName, "%v", err)
			return
		}
		name, v = fileName, sec.Reveal()
	case v == "":
		return
	}
	keys, err := broker.ParseKeys(v)
	if err != nil {
		p.errorf(name, "%v", err)
		return
	}
	c.EncryptionKeys = keys
}

// loadRedis reads the fleet settings: TOKENBROKER_REDIS_URL for one server,
// or TOKENBROKER_REDIS_ADDRS for a Cluster (several addresses) or, with
// TOKENBROKER_REDIS_SENTINEL_MASTER, the sentinels.
func loadRedis(p *problems, vars map[string]string, c *Config) {
	get := func(s string) (string, string) { return envPrefix + s, strings.TrimSpace(vars[envPrefix+s]) }
	urlName, url := get(varRedisURL)
	addrsName, addrs := get(varRedisAddrs)
	masterName, master := get(varRedisSentinelMaster)
	o := &redis.UniversalOptions{}
	switch {
	case url != "" && addrs != "":
		p.errorf(addrsName, "set together with %s; use the URL for one server, the addresses for Sentinel or Cluster", urlName)
		return
	case url != "":
		opts, err := redis.ParseURL(url)
		if err != nil {
			// The URL may hold a password: name the variable, not the value.
			p.errorf(urlName, "not a valid Redis URL (%s); use redis://[user:password@]host:port/db or rediss://…", redactURLError(err))
			return
		}
		o.Addrs, o.Username, o.Password, o.DB, o.TLSConfig = []string{opts.Addr}, opts.Username, opts.Password, opts.DB, opts.TLSConfig
	case addrs != "":
		for _, a := range strings.FieldsFunc(addrs, func(r rune) bool { return r == ',' || r == ' ' }) {
			if _, _, err := net.SplitHostPort(a); err != nil {
				p.errorf(addrsName, "%s is not host:port", show(a))
				return
			}
			o.Addrs = append(o.Addrs, a)
		}
		o.MasterName = master
	case master != "":
		p.errorf(masterName, "set without %s; list the sentinels' host:port there", addrsName)
		return
	default:
		for _, s := range []string{varRedisUsername, varRedisPassword, varRedisPassword + fileSuffix, varRedisCAFile} {
			if n, v := get(s); v != "" {
				p.warnf(n, "set, but no Redis is configured (TOKENBROKER_REDIS_URL or _ADDRS); it is ignored")
			}
		}
		return
	}
	if _, v := get(varRedisUsername); v != "" {
		o.Username = v
	}
	pwName, pw := get(varRedisPassword)
	pwFileName, pwFile := get(varRedisPassword + fileSuffix)
	switch {
	case pw != "" && pwFile != "":
		p.errorf(pwName, "set both it and %s; keep one", pwFileName)
	case pwFile != "":
		sec, err := readSecretFile(pwFile)
		if err != nil {
			p.errorf(pwFileName, "%v", err)
		}
		o.Password = sec.Reveal()
	case pw != "":
		o.Password = pw
	}
	if caName, ca := get(varRedisCAFile); ca != "" {
		pem, err := os.ReadFile(ca)
		pool := x509.NewCertPool()
		switch {
		case err != nil:
			p.errorf(caName, "%s cannot be read: %v", show(ca), errors.Unwrap(err))
		case !pool.AppendCertsFromPEM(pem):
			p.errorf(caName, "%s holds no PEM certificate", show(ca))
		default:
			if o.TLSConfig == nil {
				o.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
			}
			o.TLSConfig.RootCAs = pool
		}
	}
	c.Redis = o
}

// env is the environment the configuration was read from.
func (c Config) env() []string {
	if c.environ == nil {
		return nil
	}
	return *c.environ
}
