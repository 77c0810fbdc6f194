package config

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"slices"
	"strings"
	"sync"

	"github.com/kelseyhightower/envconfig"
)

// problems collects every error and warning, each one line that names the
// variable: "TOKENBROKER_X_Y: what is wrong; what to do".
type problems struct {
	errs     []error
	warnings []string
}

func (p *problems) errorf(variable, format string, args ...any) {
	p.errs = append(p.errs, fmt.Errorf("%s: %s", Printable(variable), fmt.Sprintf(format, args...)))
}

func (p *problems) warnf(variable, format string, args ...any) {
	p.warnings = append(p.warnings, Printable(variable)+": "+fmt.Sprintf(format, args...))
}

func (p *problems) err() error { return errors.Join(p.errs...) }

// decode fills spec, a pointer to a settings struct, from the variables
// under prefix, and reports each field's problem under its variable's name.
// A blank value counts as unset: the field gets its default tag.
func decode(p *problems, prefix string, spec any) {
	if err := envconfig.Process(prefix, spec); err != nil {
		panic("config: a settings struct envconfig cannot read: " + err.Error()) // a bug here, not in the environment
	}
	keys := variables(prefix, spec)
	v := reflect.ValueOf(spec).Elem()
	for i := range v.NumField() {
		f := v.Type().Field(i)
		s, ok := v.Field(i).Addr().Interface().(setting)
		if !ok {
			continue
		}
		if !s.set() {
			if f.Tag.Get("default") == "" {
				continue
			}
			s.Decode(f.Tag.Get("default"))
		}
		if msg := s.problem(f.Tag); msg != "" {
			p.errorf(keys[f.Name], "%s", msg)
		}
	}
}

// variables maps each field of spec to its variable, as envconfig names it
// (split_words: TokenURL under TOKENBROKER_FW is TOKENBROKER_FW_TOKEN_URL).
func variables(prefix string, spec any) map[string]string {
	m := map[string]string{}
	for field, suffix := range fieldSuffixes(spec) {
		m[field] = prefix + "_" + suffix
	}
	return m
}

// suffixCache holds fieldSuffixes by struct type: a broker with thousands
// of credentials asks for the same names thousands of times.
var suffixCache sync.Map // reflect.Type -> map[string]string

// fieldSuffixes maps each field of spec to its variable without the
// prefix, from envconfig's own naming (its usage template's keys).
func fieldSuffixes(spec any) map[string]string {
	t := reflect.TypeOf(spec)
	if m, ok := suffixCache.Load(t); ok {
		return m.(map[string]string)
	}
	var b strings.Builder
	if err := envconfig.Usagef("X", spec, &b, "{{range .}}{{.Name}} {{usage_key .}}\n{{end}}"); err != nil {
		panic("config: " + err.Error())
	}
	m := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(b.String()), "\n") {
		field, key, _ := strings.Cut(l, " ")
		m[field] = strings.TrimPrefix(key, "X_")
	}
	suffixCache.Store(t, m)
	return m
}

// suffixes are the settings spec declares, without the prefix: the names
// the scan for unknown variables accepts.
func suffixes(spec any) []string {
	var out []string
	for _, s := range fieldSuffixes(spec) {
		out = append(out, s)
	}
	slices.Sort(out)
	return out
}

// environ is the process environment as a map. The first entry for a name
// wins, as with getenv(3).
func environ() map[string]string {
	m := map[string]string{}
	for _, kv := range os.Environ() {
		k, v, ok := strings.Cut(kv, "=")
		if _, dup := m[k]; ok && k != "" && !dup {
			m[k] = v
		}
	}
	return m
}
