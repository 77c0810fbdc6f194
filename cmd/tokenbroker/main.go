// Command tokenbroker keeps OAuth 2.0 access tokens fresh and hands them to
// local services over a Unix socket. This package is wiring only:
// environment to config, config to broker, broker to api.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"golang.org/x/term"

	"github.com/tokenbroker/tokenbroker/cmd/tokenbroker/internal/config"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const usage = `tokenbroker keeps OAuth 2.0 access tokens fresh and hands them out over a Unix socket.

Usage:
  tokenbroker serve           run the daemon (configured by TOKENBROKER_* variables)
  tokenbroker token NAME      print NAME's current access token
  tokenbroker status [--json] [--problems] [NAME|PATTERN ...]
                              show the credentials' state: all, those named or
                              matching a pattern (*, ?, [a-z]), only those not ok
  tokenbroker refresh NAME    refresh NAME now
  tokenbroker authorize NAME  authorize NAME with the provider (authorization-code flow, PKCE)
                              [--paste] on a host without a browser; [--timeout 5m]
  tokenbroker check           validate the configuration and print it, secrets redacted
  tokenbroker demo            run against a built-in local provider, to see it work
  tokenbroker help env        list every TOKENBROKER_* variable: type, default, meaning
  tokenbroker version

See README.md for the configuration reference.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// Exit codes.
const (
	exitOK     = 0
	exitFail   = 1 // the operation failed
	exitConfig = 2 // bad usage or configuration
)

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitConfig
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "serve":
		return serveCmd(stderr)
	case "token":
		return tokenCmd(rest, stdout, stderr)
	case "status":
		return statusCmd(rest, stdout, stderr)
	case "refresh":
		return refreshCmd(rest, stdout, stderr)
	case "authorize":
		return authorizeCmd(rest, os.Stdin, stdout, stderr)
	case "check":
		return checkCmd(stdout, stderr)
	case "demo":
		return demoCmd(stdout, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, "tokenbroker", version)
		return exitOK
	case "help", "-h", "--help":
		if len(rest) == 1 && rest[0] == "env" {
			if err := config.WriteUsage(stdout); err != nil {
				fmt.Fprintln(stderr, "tokenbroker:", err)
				return exitFail
			}
			return exitOK
		}
		fmt.Fprint(stdout, usage)
		return exitOK
	}
	fmt.Fprintf(stderr, "tokenbroker: unknown command %q\n\n%s", cmd, usage)
	return exitConfig
}

// printConfigErrors lists every configuration problem, one per line.
func printConfigErrors(w io.Writer, err error) {
	fmt.Fprintln(w, "tokenbroker: the configuration has problems:")
	for _, line := range strings.Split(err.Error(), "\n") {
		fmt.Fprintln(w, "  -", line)
	}
}

// configure loads the configuration, printing warnings and every problem.
func configure(stderr io.Writer) (Config, bool) {
	cfg, err := config.Load()
	for _, w := range cfg.Warnings {
		fmt.Fprintln(stderr, "tokenbroker: warning:", w)
	}
	if err != nil {
		printConfigErrors(stderr, err)
		return cfg, false
	}
	return cfg, true
}

func checkCmd(stdout, stderr io.Writer) int {
	cfg, ok := configure(stderr)
	if !ok {
		return exitConfig
	}
	config.WriteCheck(stdout, cfg)
	return exitOK
}

func newLogger(cfg Config, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.LogLevel}
	format := cfg.LogFormat
	if format == "" {
		format = "json"
		if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			format = "text"
		}
	}
	if format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// signalContext ends on the first SIGINT or SIGTERM; a second one exits at once.
func signalContext(stderr io.Writer) (context.Context, func()) {
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan os.Signal, 2)
	signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-ch
		cancel()
		<-ch
		fmt.Fprintln(stderr, "tokenbroker: second signal, exiting now")
		os.Exit(exitFail)
	}()
	return ctx, func() { signal.Stop(ch); cancel() }
}

// shutdownTimeout bounds a graceful stop; after shutdownGrace, refreshes
// still waiting on a provider are cancelled.
const (
	shutdownTimeout = 10 * time.Second
	shutdownGrace   = 2 * time.Second
)

var errUsage = errors.New("usage")
