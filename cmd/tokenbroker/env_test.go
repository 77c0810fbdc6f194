package main

import (
	"os"
	"strings"

	"github.com/tokenbroker/tokenbroker/cmd/tokenbroker/internal/config"
)

// Variable names the tests build environments from.
const (
	envPrefix         = config.Prefix + "_"
	fileSuffix        = "_FILE"
	varSocket         = "SOCKET"
	varStateDir       = "STATE_DIR"
	varCredentials    = "CREDENTIALS"
	varEncryptionKey  = "ENCRYPTION_KEY"
	varRedisURL       = "REDIS_URL"
	varRedisPassword  = "REDIS_PASSWORD"
	varRedisCAFile    = "REDIS_CA_FILE"
	varTestCrashAt    = "TEST_CRASH_AT"
	sfxClientSecret   = "CLIENT_SECRET"
	sfxPreviousSecret = "CLIENT_SECRET_PREVIOUS"
	sfxRefreshToken   = "REFRESH_TOKEN"
	sfxPassword       = "PASSWORD"
	maxSocketPathLen  = 107
)

// loadConfig loads environ as the daemon would load its own environment:
// envconfig reads only the process environment, so environ becomes it for
// the call (every TOKENBROKER_ variable not in environ is unset) and the
// environment is restored after. No test in this package runs in parallel.
func loadConfig(environ []string) (Config, error) {
	saved := environMap(os.Environ())
	defer func() {
		for k, v := range environMap(os.Environ()) {
			if old, ok := saved[k]; !ok {
				os.Unsetenv(k)
			} else if old != v {
				os.Setenv(k, old)
			}
		}
		for k, v := range saved {
			if _, ok := os.LookupEnv(k); !ok {
				os.Setenv(k, v)
			}
		}
	}()
	if err := setEnviron(environ); err != nil {
		return Config{}, err
	}
	return config.Load()
}

// environMap turns "KEY=value" entries into a map; the first entry for a
// key wins, as with getenv(3).
func environMap(environ []string) map[string]string {
	m := make(map[string]string, len(environ))
	for _, kv := range environ {
		k, v, ok := strings.Cut(kv, "=")
		if _, dup := m[k]; ok && k != "" && !dup {
			m[k] = v
		}
	}
	return m
}
