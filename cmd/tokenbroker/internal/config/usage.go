package config

import (
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/kelseyhightower/envconfig"
)

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
