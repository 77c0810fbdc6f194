package config

import (
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/kelseyhightower/envconfig"
)

// The settings, declared once. envconfig names each variable from its
// field (split_words) under TOKENBROKER_ (Global, Redis) or
// TOKENBROKER_<NAME>_ (Cred); help env prints the tags, the scan for
// unknown variables accepts exactly these names. The tags are rules decode
// checks: default, min, max, and type "a|b" (the words a setting takes),
// "path" (absolute) or "text" (no control character). No field has an
// envconfig:"..." tag: envconfig would then also read the unprefixed
// variable ($PASSWORD for every credential). A Secret field X reads the
// file its Value[string] field XFile names, if any.

// Global are the settings of the broker as a whole.
type Global struct {
	Credentials          Value[string]        `split_words:"true" type:"names" desc:"the credentials to keep fresh, separated by commas (a-z, 0-9, _ and -)"`
	Socket               Value[string]        `split_words:"true" type:"path" desc:"the Unix socket (default $XDG_RUNTIME_DIR/tokenbroker/tokenbroker.sock, /run/tokenbroker/tokenbroker.sock for root)"`
	StateDir             Value[string]        `split_words:"true" type:"path" desc:"where tokens are kept (default $XDG_STATE_HOME/tokenbroker, /var/lib/tokenbroker for root)"`
	LogLevel             Value[string]        `split_words:"true" type:"debug|info|warn|error" default:"info" desc:"the least severe log level written"`
	LogFormat            Value[string]        `split_words:"true" type:"text|json" desc:"log format (default text on a terminal, json otherwise)"`
	RefreshAt            Value[float64]       `split_words:"true" type:"fraction" default:"0.85" min:"0.5" max:"0.95" desc:"refresh when this fraction of a token's lifetime has passed"`
	RequestTimeout       Value[time.Duration] `split_words:"true" type:"duration" default:"30s" min:"1s" max:"1h" desc:"the longest one request to a provider may take; for one that spends a refresh token, connecting and sending it"`
	AnswerTimeout        Value[time.Duration] `split_words:"true" type:"duration" default:"5m" min:"1s" max:"24h" desc:"the longest wait for the answer to a sent request that spends a refresh token (not shorter than REQUEST_TIMEOUT)"`
	HandoutWait          Value[time.Duration] `split_words:"true" type:"duration" default:"5s" min:"1ms" max:"5m" desc:"how long a caller waits for a token being fetched"`
	BackoffMax           Value[time.Duration] `split_words:"true" type:"duration" default:"5m" min:"1s" max:"24h" desc:"the longest wait between retries of a failing refresh"`
	ProbeInterval        Value[time.Duration] `split_words:"true" type:"duration" default:"5s" min:"1s" max:"10m" desc:"while a provider's token endpoint fails, one probe request per interval goes to it (never sooner than its Retry-After)"`
	ProviderConcurrency  Value[int]           `split_words:"true" type:"number" default:"4" min:"1" max:"1024" desc:"refreshes that may run at once per provider"`
	EncryptionKey        Secret               `split_words:"true" type:"keys" desc:"seal stored tokens: id:base64 of 32 bytes, several separated by commas (the first seals)"`
	EncryptionKeyFile    Value[string]        `split_words:"true" type:"file" desc:"a file holding TOKENBROKER_ENCRYPTION_KEY"`
	MetricsAddr          Value[string]        `split_words:"true" type:"host:port" desc:"also serve /metrics over TCP here (e.g. 127.0.0.1:9464)"`
	MetricsPerCredential Value[string]        `split_words:"true" type:"true|false" default:"false" desc:"also count handouts and refreshes per credential (8 more series a credential)"`
	SocketMode           Value[os.FileMode]   `split_words:"true" type:"octal" default:"0660" desc:"the socket's mode"`
	SocketGroup          IDs                  `split_words:"true" type:"group" kind:"group" desc:"the socket's group (default the broker's)"`
	AllowUids            IDs                  `split_words:"true" type:"users" kind:"user" desc:"who may fetch tokens: user ids or names (default anyone who can connect)"`
	AllowGids            IDs                  `split_words:"true" type:"groups" kind:"group" desc:"who may fetch tokens: group ids or names"`
	TestCrashAt          Value[string]        `split_words:"true" hidden:"true" desc:"crash tests only: the daemon kills itself at this refresh step (a -tags crashtest build; others refuse it)"`
}

// Redis are the fleet's settings: TOKENBROKER_REDIS_URL for one server, or
// TOKENBROKER_REDIS_ADDRS for a Cluster or, with a master, Sentinel.
type Redis struct {
	RedisURL            Secret               `split_words:"true" type:"URL" desc:"one Redis server: redis://[user:password@]host:port/db or rediss://... (a fleet shares tokens through it)"`
	RedisAddrs          Value[string]        `split_words:"true" type:"host:port,..." desc:"Redis Cluster nodes, or the sentinels with TOKENBROKER_REDIS_SENTINEL_MASTER"`
	RedisSentinelMaster Value[string]        `split_words:"true" type:"name" desc:"the Sentinel master's name"`
	RedisUsername       Value[string]        `split_words:"true" type:"name" desc:"Redis ACL user"`
	RedisPassword       Secret               `split_words:"true" type:"secret" desc:"Redis password"`
	RedisPasswordFile   Value[string]        `split_words:"true" type:"file" desc:"a file holding the Redis password"`
	RedisCAFile         Value[string]        `split_words:"true" type:"file" desc:"PEM CA certificates to verify Redis's TLS certificate"`
	RedisPrefix         Value[string]        `split_words:"true" type:"text" default:"tokenbroker:" desc:"prefix of every Redis key"`
	RedisLockTTL        Value[time.Duration] `split_words:"true" type:"duration" default:"15s" min:"1s" max:"5m" desc:"the refresh lock's lease: how long a fleet waits for a broker that died holding it"`
}

// Cred are one credential's settings, under TOKENBROKER_<NAME>_ (NAME
// upper-cased, - as _).
type Cred struct {
	Provider                 Value[string]        `split_words:"true" type:"preset" default:"generic" desc:"firework, livepush, ingest, vsrs or generic"`
	Grant                    Value[string]        `split_words:"true" type:"grant" desc:"client_credentials, refresh_token or password (default from what is set: REFRESH_TOKEN or AUTHORIZE_URL+REDIRECT_URI, USERNAME, else client_credentials)"`
	TokenURL                 Value[string]        `split_words:"true" type:"URL" desc:"the token endpoint (required unless the preset has one)"`
	AuthorizeURL             Value[string]        `split_words:"true" type:"URL" desc:"the authorization endpoint, for tokenbroker authorize"`
	ClientID                 Value[string]        `split_words:"true" type:"text" desc:"the client id (required)"`
	ClientSecret             Secret               `split_words:"true" type:"secret" desc:"the client secret"`
	ClientSecretFile         Value[string]        `split_words:"true" type:"file" desc:"a file holding the client secret"`
	ClientSecretPrevious     Secret               `split_words:"true" type:"secret" desc:"the secret before a rotation, tried once when the current one is refused"`
	ClientSecretPreviousFile Value[string]        `split_words:"true" type:"file" desc:"a file holding the previous client secret"`
	Scopes                   Value[string]        `split_words:"true" type:"list" desc:"scopes to request, separated by commas or spaces"`
	RefreshToken             Secret               `split_words:"true" type:"secret" desc:"an initial refresh token (or run tokenbroker authorize NAME)"`
	RefreshTokenFile         Value[string]        `split_words:"true" type:"file" desc:"a file holding the initial refresh token"`
	Username                 Value[string]        `split_words:"true" type:"text" desc:"the resource owner, for the password grant"`
	Password                 Secret               `split_words:"true" type:"secret" desc:"the resource owner's password"`
	PasswordFile             Value[string]        `split_words:"true" type:"file" desc:"a file holding the password"`
	RedirectURI              Value[string]        `split_words:"true" type:"URI" desc:"the redirect URI registered with the provider"`
	Method                   Value[string]        `split_words:"true" type:"GET|POST" desc:"the token request's method (default the preset's, POST)"`
	Params                   Value[string]        `split_words:"true" type:"body|query" desc:"where parameters travel (default the preset's, body)"`
	ClientAuth               Value[string]        `split_words:"true" type:"method" desc:"client_secret_basic (or basic), client_secret_post (or params), or none (default the preset's)"`
	ScopeSeparator           Value[separator]     `split_words:"true" type:"space|comma" desc:"how scopes are joined (default space)"`
	Headers                  Value[string]        `split_words:"true" type:"headers" desc:"extra request headers: Name: value; Name2: value2"`
	LifetimeField            Value[string]        `split_words:"true" type:"json-field" desc:"the answer's field holding the lifetime in seconds (tried first)"`
	TokenTypes               Value[string]        `split_words:"true" type:"list" desc:"token_type values accepted besides bearer, separated by commas"`
	RefreshSendsSecret       Value[string]        `split_words:"true" type:"true|false" desc:"refresh sends client_secret (default the preset's, true)"`
	RefreshSendsRedirectURI  Value[string]        `split_words:"true" type:"true|false" desc:"refresh sends redirect_uri (default the preset's, false)"`
	DefaultLifetime          Value[time.Duration] `split_words:"true" type:"duration" min:"1s" max:"168h" desc:"a token's lifetime when the answer gives none (default 1h)"`
	AllowUids                IDs                  `split_words:"true" type:"users" kind:"user" desc:"who may fetch this token (replaces TOKENBROKER_ALLOW_UIDS)"`
	AllowGids                IDs                  `split_words:"true" type:"groups" kind:"group" desc:"who may fetch this token (replaces TOKENBROKER_ALLOW_GIDS)"`
	// The proxy, /v1/proxy/NAME/... on the socket.
	Upstream            Value[string]        `split_words:"true" type:"URL" desc:"the API the proxy forwards to with this token: an https:// origin, with an optional path prefix (http:// only to loopback)"`
	UpstreamTimeout     Value[time.Duration] `split_words:"true" type:"duration" default:"30s" min:"1s" max:"10m" desc:"the proxy's longest wait for the upstream's answer headers"`
	UpstreamMaxDuration Value[time.Duration] `split_words:"true" type:"duration" default:"10m" min:"1s" max:"24h" desc:"the longest one proxied exchange may take, both bodies streamed"`
	// The token file (tokenfile.go).
	TokenFile        Value[string]      `split_words:"true" type:"path" desc:"keep the current token in this file, replaced on each new token, removed while there is none"`
	TokenFileFormat  Value[string]      `split_words:"true" type:"raw|header|json" default:"raw" desc:"the bare token, Authorization: Bearer TOKEN (for curl -H @FILE), or the socket's JSON answer; each with a newline"`
	TokenFileMode    Value[os.FileMode] `split_words:"true" type:"octal" default:"0600" desc:"the token file's mode (never group- or world-writable)"`
	TokenFileGroup   IDs                `split_words:"true" type:"group" kind:"group" desc:"the token file's group (default the broker's)"`
	TokenFileSignal  Value[string]      `split_words:"true" type:"HUP|USR1|USR2" desc:"signal sent after each new token to the process TOKEN_FILE_PIDFILE names"`
	TokenFilePidfile Value[string]      `split_words:"true" type:"path" desc:"a file holding the pid of the process to signal"`
}

// usageFormat is envconfig's usage template with the columns the README's
// tables hold; type and hidden are our own tags.
const usageFormat = `{{range .}}{{if not (.Tags.Get "hidden")}}{{usage_key .}}	{{or (.Tags.Get "type") (usage_type .)}}{{if .Tags.Get "max"}}[{{.Tags.Get "min"}},{{.Tags.Get "max"}}]{{end}}	{{or (usage_default .) "-"}}	{{usage_description .}}
{{end}}{{end}}`

// WriteUsage writes every variable with its type, default and description,
// from the settings structs' tags.
func WriteUsage(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 1, 0, 2, ' ', 0)
	for _, section := range []struct {
		title, prefix string
		spec          any
	}{
		{"Global settings", Prefix, &Global{}},
		{"Fleet settings (Redis)", Prefix, &Redis{}},
		{"Per credential, NAME upper-cased with - as _", Prefix + "_<NAME>", &Cred{}},
	} {
		fmt.Fprintf(tw, "%s:\nVARIABLE\tTYPE\tDEFAULT\tDESCRIPTION\n", section.title)
		if err := envconfig.Usagef(section.prefix, section.spec, tw, usageFormat); err != nil {
			return err
		}
		fmt.Fprintln(tw)
	}
	return tw.Flush()
}
