package main

import (
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strings"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/cmd/tokenbroker/internal/config"
	"github.com/tokenbroker/tokenbroker/sources"
)

// The configuration is read by internal/config, the only code that names
// environment variables; main wires what it returns.
type (
	Config           = config.Config
	CredentialConfig = config.Credential
)

// credential builds the broker's credential: the Source for the grant over
// an Endpoint in the credential's dialect, sending with hc and with the
// secrets of the live it returns, which a reload replaces.
func credential(c CredentialConfig, hc *http.Client, log *slog.Logger) (broker.Credential, *live, error) {
	name, d := c.Name, c.Dialect // the closure and e keep these, not a copy of c
	client := c.Client
	client.Secret, client.PreviousSecret = sources.Secret{}, sources.Secret{} // sent from l alone
	e := &sources.Endpoint{Dialect: &d, Client: client, HTTP: hc,
		Warn: func(msg string) { log.Warn(msg, "credential", name) }}
	l := newLive(c, e)
	src, err := sources.New(c.Grant, e, c.Username, l.Secrets)
	if err != nil {
		return broker.Credential{}, nil, fmt.Errorf("credential %s: %w", c.Name, err)
	}
	return broker.Credential{
		Name:                c.Name,
		Provider:            c.Provider,
		Endpoint:            c.Provider + " " + c.Dialect.TokenURL, // shares its health
		Source:              src,
		Fingerprint:         c.Fingerprint(),
		InitialRefreshToken: c.RefreshToken,
	}, l, nil
}

// setEnviron makes environ the process's TOKENBROKER_ variables (and sets
// the others it holds), for a command that configures itself, as demo
// does: envconfig reads only the process environment. The first entry for
// a name wins, as with getenv(3), so they are set from the last.
func setEnviron(environ []string) error {
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, config.Prefix+"_") {
			os.Unsetenv(k)
		}
	}
	for _, kv := range slices.Backward(environ) {
		k, v, _ := strings.Cut(kv, "=")
		if err := os.Setenv(k, v); err != nil {
			return fmt.Errorf("setting %s: %w", k, err)
		}
	}
	return nil
}
