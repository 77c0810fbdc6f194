package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
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

func statusCmd(args []string, stdout, stderr io.Writer) int {
	asJSON := len(args) == 1 && args[0] == "--json"
	if len(args) > 1 || (len(args) == 1 && !asJSON) {
		fmt.Fprintln(stderr, "usage: tokenbroker status [--json]")
		return exitConfig
	}
	return ask(stderr, func(ctx context.Context, c *client.Client) error {
		creds, err := c.Credentials(ctx)
		if err == nil {
			printStatus(stdout, creds, asJSON, colourful(stdout))
		}
		return err
	})
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
