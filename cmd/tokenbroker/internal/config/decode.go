package config

import (
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"

	"github.com/kelseyhightower/envconfig"
)

// problems collects every error and warning, each one line that names the
// variable: "TOKENBROKER_X_Y: what is wrong; what to do".
type problems struct {
	errs     []error
	warnings []string
}

func (p *problems) errorf(variable, format string, args ...any) {
	p.errs = append(p.errs, errors.New(Printable(variable)+": "+fmt.Sprintf(format, args...)))
}

func (p *problems) warnf(variable, format string, args ...any) {
	p.warnings = append(p.warnings, Printable(variable)+": "+fmt.Sprintf(format, args...))
}

func (p *problems) err() error { return errors.Join(p.errs...) }

// decode fills spec, a pointer to a settings struct, from the variables
// under prefix, reports each field's problem under its variable's name,
// and reads each Secret from its variable or its _FILE. A blank value
// counts as unset: the field gets its default tag. It returns where each
// secret read came from, by variable without the prefix (Credential.Sources).
func decode(p *problems, prefix string, spec any) (from map[string]string) {
	from = map[string]string{}
	if err := envconfig.Process(prefix, spec); err != nil {
		panic("config: a settings struct envconfig cannot read: " + err.Error()) // a bug here, not in the environment
	}
	keys := variables(prefix, spec)
	v := reflect.ValueOf(spec).Elem()
	for i := range v.NumField() {
		f, s := v.Type().Field(i), v.Field(i).Addr().Interface().(setting)
		if def := f.Tag.Get("default"); !s.set() && def != "" {
			s.Decode(def)
		}
		if s.set() {
			if msg := s.check(f.Tag); msg != "" {
				p.errorf(keys[f.Name], "%s", msg)
			}
		}
		if sec, ok := s.(*Secret); ok {
			path := ""
			if file := v.FieldByName(f.Name + "File"); file.IsValid() {
				path = file.Interface().(Value[string]).V
			}
			if sec.read(p, keys[f.Name], path); sec.from != "" {
				from[suffixes[v.Addr().Type()][f.Name]] = sec.from
			}
		}
	}
	return from
}

// suffixes maps each settings struct's fields to their variables without
// the prefix, as envconfig names them (split_words: TokenURL under
// TOKENBROKER_FW is TOKENBROKER_FW_TOKEN_URL), from its usage template.
var suffixes = func() map[reflect.Type]map[string]string {
	all := map[reflect.Type]map[string]string{}
	for _, spec := range []any{&Global{}, &Redis{}, &Cred{}} {
		var b strings.Builder
		if err := envconfig.Usagef("X", spec, &b, "{{range .}}{{.Name}} {{usage_key .}}\n{{end}}"); err != nil {
			panic("config: " + err.Error())
		}
		m := map[string]string{}
		for _, l := range strings.Split(strings.TrimSpace(b.String()), "\n") {
			field, key, _ := strings.Cut(l, " ")
			m[field] = strings.TrimPrefix(key, "X_")
		}
		all[reflect.TypeOf(spec)] = m
	}
	return all
}()

// globalSettings and credSettings are the names the scan for unknown
// variables accepts, after TOKENBROKER_ and after TOKENBROKER_<NAME>_.
var (
	globalSettings = settingNames(&Global{}, &Redis{})
	credSettings   = settingNames(&Cred{})
)

func settingNames(specs ...any) []string {
	var out []string
	for _, spec := range specs {
		out = slices.AppendSeq(out, maps.Values(suffixes[reflect.TypeOf(spec)]))
	}
	slices.Sort(out)
	return out
}

// variables maps each field of spec to its variable under prefix.
func variables(prefix string, spec any) map[string]string {
	m := map[string]string{}
	for field, suffix := range suffixes[reflect.TypeOf(spec)] {
		m[field] = prefix + "_" + suffix
	}
	return m
}
