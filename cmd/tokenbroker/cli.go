package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/term"

	"github.com/tokenbroker/tokenbroker/api/client"
)

// cliTimeout bounds a CLI request; a handout may wait for a refresh.
const cliTimeout = 15 * time.Second

// ask runs one request against the broker at the default socket.
func ask(stderr io.Writer, do func(context.Context, *client.Client) error) int {
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	c := client.New(client.DefaultSocket())
	defer c.Close()
	if err := do(ctx, c); err != nil {
		return fail(stderr, err)
	}
	return exitOK
}

// fail prints err once prefixed: client errors already start with "tokenbroker".
func fail(stderr io.Writer, err error) int {
	msg := err.Error()
	if !strings.HasPrefix(msg, "tokenbroker") {
		msg = "tokenbroker: " + msg
	}
	fmt.Fprintln(stderr, msg)
	return exitFail
}

// tokenCmd prints NAME's access token and a newline, for
// Authorization: Bearer $(tokenbroker token NAME).
func tokenCmd(args []string, stdout, stderr io.Writer) int {
	if len(args) != 1 {
		fmt.Fprintln(stderr, "usage: tokenbroker token NAME")
		return exitConfig
	}
	return ask(stderr, func(ctx context.Context, c *client.Client) error {
		t, err := c.Token(ctx, args[0])
		if err == nil {
			fmt.Fprintln(stdout, t.AccessToken)
		}
		return err
	})
}

func refreshCmd(args []string, stdout, stderr io.Writer) int {
	if len(args) != 1 {
		fmt.Fprintln(stderr, "usage: tokenbroker refresh NAME")
		return exitConfig
	}
	return ask(stderr, func(ctx context.Context, c *client.Client) error {
		err := c.Refresh(ctx, args[0])
		if err == nil {
			fmt.Fprintf(stdout, "%s refreshed\n", args[0])
		}
		return err
	})
}

const statusUsage = "usage: tokenbroker status [--json] [--problems] [NAME|PATTERN ...]"

// statusCmd prints the credentials' state: all of them, or those NAMEs and
// glob PATTERNs (path.Match: *, ?, [a-z]) select; --problems keeps those
// that are not ok, the lines an operator wants out of thousands.
func statusCmd(args []string, stdout, stderr io.Writer) int {
	var asJSON, problems bool
	var patterns []string
	for _, a := range args {
		switch a {
		case "--json", "-json":
			asJSON = true
		case "--problems", "-problems":
			problems = true
		default:
			if strings.HasPrefix(a, "-") {
				fmt.Fprintf(stderr, "tokenbroker status: unknown flag %s\n%s\n", a, statusUsage)
				return exitConfig
			}
			if _, err := path.Match(a, ""); err != nil {
				fmt.Fprintf(stderr, "tokenbroker status: %q is not a name or a pattern (patterns use *, ? and [a-z])\n%s\n", a, statusUsage)
				return exitConfig
			}
			patterns = append(patterns, a)
		}
	}
	return ask(stderr, func(ctx context.Context, c *client.Client) error {
		creds, err := c.Credentials(ctx)
		if err != nil {
			return err
		}
		shown, matched, err := selectStatus(creds, patterns, problems)
		if err != nil {
			return err
		}
		if problems && len(shown) == 0 && !asJSON {
			fmt.Fprintf(stdout, "no problems: all %d %s ok\n", matched, plural(matched, "credential is", "credentials are"))
			return nil
		}
		printStatus(stdout, shown, asJSON, colourful(stdout))
		return nil
	})
}

// selectStatus keeps the credentials that patterns select (all when there
// are none), and of those only the ones not ok when problems is set. It
// also returns how many the patterns selected. A pattern that selects no
// credential is an error: a mistyped name must not look like a healthy one.
func selectStatus(creds []client.CredentialStatus, patterns []string, problems bool) ([]client.CredentialStatus, int, error) {
	used := make([]bool, len(patterns))
	shown := make([]client.CredentialStatus, 0, len(creds))
	matched := 0
	for _, s := range creds {
		selected := len(patterns) == 0
		for i, p := range patterns {
			if ok, _ := path.Match(p, s.Name); ok { // checked in statusCmd
				selected, used[i] = true, true
			}
		}
		if !selected {
			continue
		}
		matched++
		if !problems || s.State != "ok" {
			shown = append(shown, s)
		}
	}
	for i, p := range patterns {
		if !used[i] {
			return nil, 0, fmt.Errorf("no credential is named %q or matches it; tokenbroker status lists every one (%d)", p, len(creds))
		}
	}
	return shown, matched, nil
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// colourful reports whether w is a terminal that wants colour (NO_COLOR,
// https://no-color.org, turns it off).
func colourful(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd())) && os.Getenv("NO_COLOR") == "" && os.Getenv("TERM") != "dumb"
}

// stateColours are ANSI colours by state; every code has the same length,
// so tabwriter's columns stay aligned.
var stateColours = map[string]string{
	"ok": "\x1b[32m", "pending": "\x1b[36m", "retrying": "\x1b[33m", "reauthorize": "\x1b[31m", "rejected": "\x1b[31m",
}

func printStatus(stdout io.Writer, creds []client.CredentialStatus, asJSON, colour bool) {
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(map[string]any{"credentials": creds})
		return
	}
	now := time.Now()
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	paint := func(state, text string) string {
		if !colour {
			return text
		}
		c, ok := stateColours[state]
		if !ok {
			c = "\x1b[39m"
		}
		return c + text + "\x1b[0m"
	}
	fmt.Fprintf(tw, "NAME\tPROVIDER\tGRANT\t%s\tEXPIRES IN\tNEXT REFRESH\tLAST ERROR\n", paint("", "STATE"))
	for _, s := range creds {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.Name, s.Provider, s.Grant, paint(s.State, s.State),
			until(now, s.ExpiresAt), until(now, s.NextRefresh), s.LastError)
	}
	_ = tw.Flush()
}

func until(now, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := t.Sub(now).Round(time.Second)
	if d < 0 {
		return "expired"
	}
	return d.String()
}
