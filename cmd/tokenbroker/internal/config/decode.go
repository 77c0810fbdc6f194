package config

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/user"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kelseyhightower/envconfig"

	"github.com/tokenbroker/tokenbroker/sources"
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

// setting is a field type of the settings structs. envconfig calls Decode
// whenever the variable is set, even to "". Decode never fails, since
// envconfig stops at the first error: check, given the field's tags, says
// what is wrong, and the value is then left zero.
type setting interface {
	envconfig.Decoder
	set() bool
	check(tag reflect.StructTag) string
}

var (
	_ setting = (*Value[string])(nil)
	_ setting = (*Secret)(nil)
	_ setting = (*IDs)(nil)
)

// decode fills spec, a pointer to a settings struct, from the variables
// under prefix; a blank one gets the default tag. It reports each field's
// problem under its variable, reads each Secret from its variable or the
// file its sibling <Name>File names, and returns where each secret read
// came from, by setting (CLIENT_SECRET).
func decode(p *problems, prefix string, spec any) (from map[string]string) {
	if err := envconfig.Process(prefix, spec); err != nil {
		panic("config: a settings struct envconfig cannot read: " + err.Error()) // our bug, not the environment's
	}
	from, v := map[string]string{}, reflect.ValueOf(spec).Elem()
	for i := range v.NumField() {
		f, s := v.Type().Field(i), v.Field(i).Addr().Interface().(setting)
		suffix := suffixes[v.Type()][f.Name]
		if def := f.Tag.Get("default"); !s.set() && def != "" {
			s.Decode(def)
		}
		if s.set() {
			if msg := s.check(f.Tag); msg != "" {
				p.errorf(prefix+"_"+suffix, "%s", msg)
			}
		}
		if sec, ok := s.(*Secret); ok {
			var path string
			if file := v.FieldByName(f.Name + "File"); file.IsValid() {
				path = file.Interface().(Value[string]).V
			}
			if sec.read(p, prefix+"_"+suffix, path); sec.from != "" {
				from[suffix] = sec.from
			}
		}
	}
	return from
}

// suffixes maps each settings struct's fields to their variables after the
// prefix, as envconfig names them (TokenURL: TOKEN_URL). globalSettings and
// credSettings are the names the scan for unknown variables accepts after
// TOKENBROKER_ and after TOKENBROKER_<NAME>_.
var (
	suffixes                     = map[reflect.Type]map[string]string{}
	globalSettings, credSettings []string
	globalFiles, credFiles       []string // the settings of type "file"
)

// FileVariables returns the variables that name a file the configuration
// reads (a secret's _FILE, the Redis CA), for credentials names, as the
// settings' type:"file" tags say. A reload watches those files, and no
// other: a token file, say, is the broker's own output.
func FileVariables(names []string) []string {
	vars := slices.Clone(globalFiles)
	for _, n := range names {
		for _, suffix := range credFiles {
			vars = append(vars, CredentialPrefix(n)+"_"+suffix)
		}
	}
	return vars
}

func init() {
	for _, spec := range []any{&Global{}, &Redis{}, &Cred{}} {
		var b strings.Builder
		if err := envconfig.Usagef("X", spec, &b, "{{range .}}{{usage_key .}} {{end}}"); err != nil {
			panic("config: " + err.Error())
		}
		t, m := reflect.TypeOf(spec).Elem(), map[string]string{}
		for i, key := range strings.Fields(b.String()) { // one per field, in order
			suffix := strings.TrimPrefix(key, "X_")
			m[t.Field(i).Name] = suffix
			switch {
			case t.Field(i).Tag.Get("type") != "file":
			case t == reflect.TypeFor[Cred]():
				credFiles = append(credFiles, suffix)
			default:
				globalFiles = append(globalFiles, Prefix+"_"+suffix)
			}
		}
		suffixes[t] = m
		if t == reflect.TypeFor[Cred]() {
			credSettings = slices.Sorted(maps.Values(m))
		} else {
			globalSettings = slices.AppendSeq(globalSettings, maps.Values(m))
		}
	}
	slices.Sort(globalSettings)
}

// Value is a setting read from text, without the blanks around it: a
// string, a number, a duration or an octal file mode.
type Value[T ~string | ~int | ~int64 | ~uint32 | ~float64] struct {
	V   T
	raw string
	err error
}

// separator is a scope separator, whose blank may be the point: only tabs
// and line breaks around it go.
type separator string

// notA completes "VALUE is not ..." by the field's type tag.
var notA = map[string]string{
	"duration": "a duration (a number with a unit, e.g. 30s, 5m or 1h30m); use one",
	"fraction": "a number; use one",
	"number":   "a whole number; use one",
	"octal":    "an octal mode; use one, e.g. 0660 (owner and group may connect)",
}

// aliases are words a setting of type "a|b" takes beside its own.
var aliases = map[string]string{"warning": "warn", "yes": "true", "on": "true", "1": "true", "t": "true",
	"no": "false", "off": "false", "0": "false", "f": "false"}

func (v *Value[T]) Decode(s string) error {
	v.raw, v.err = strings.TrimSpace(s), nil
	switch p := any(&v.V).(type) {
	case *string:
		*p = v.raw
	case *separator:
		v.raw = strings.Trim(s, "\t\r\n")
		*p = separator(v.raw)
	case *int:
		*p, v.err = strconv.Atoi(v.raw)
	case *float64:
		*p, v.err = strconv.ParseFloat(v.raw, 64)
	case *time.Duration:
		*p, v.err = time.ParseDuration(v.raw)
	case *os.FileMode:
		n, err := strconv.ParseUint(v.raw, 8, 32)
		*p, v.err = os.FileMode(n), err
	}
	return nil
}

func (v *Value[T]) set() bool { return v.raw != "" }

// check refuses a value that does not parse, lies outside the min and max
// tags, or is not one of the words of a type tag "a|b"; it spells a word
// as the tag does.
func (v *Value[T]) check(tag reflect.StructTag) (msg string) {
	typ, lo, hi := tag.Get("type"), tag.Get("min"), tag.Get("max")
	var l, h Value[T]
	l.Decode(lo)
	h.Decode(hi)
	words := strings.Split(typ, "|")
	s, isString := any(&v.V).(*string)
	switch {
	case v.err != nil && hi != "":
		msg = fmt.Sprintf("%s is not %s from %s to %s", sources.QuoteValue(v.raw), notA[typ], lo, hi)
	case v.err != nil:
		msg = fmt.Sprintf("%s is not %s", sources.QuoteValue(v.raw), notA[typ])
	case typ == "path" && !filepath.IsAbs(v.raw):
		msg = fmt.Sprintf("%s is not an absolute path; use one", sources.QuoteValue(v.raw))
	case typ == "text" && sources.HasControl(v.raw):
		msg = "holds a control character; remove it"
	case hi != "" && !(v.V >= l.V && v.V <= h.V): // also refuses NaN
		msg = fmt.Sprintf("%s is outside %s to %s; use a value in that range", sources.QuoteValue(v.raw), lo, hi)
	case isString && len(words) > 1:
		word := cmp.Or(aliases[strings.ToLower(*s)], *s)
		if i := slices.IndexFunc(words, func(w string) bool { return strings.EqualFold(w, word) }); i >= 0 {
			*s = words[i]
		} else {
			msg = fmt.Sprintf("%s is not %s or %s; use one of them", sources.QuoteValue(v.raw), strings.Join(words[:len(words)-1], ", "), words[len(words)-1])
		}
	}
	if msg != "" {
		v.V = *new(T)
	}
	return msg
}

// IDs is a list of user or group ids or names (the field's kind tag),
// separated by commas or blanks; check looks the names up on this host.
type IDs struct {
	V   []uint32
	raw []string
}

func (l *IDs) Decode(s string) error { *l = IDs{raw: strings.FieldsFunc(s, isListSep)}; return nil }
func (l *IDs) set() bool             { return len(l.raw) > 0 }

func (l *IDs) check(tag reflect.StructTag) string {
	kind := tag.Get("kind")
	for _, f := range l.raw {
		id := f
		if _, err := strconv.ParseUint(f, 10, 32); err != nil {
			id = lookupID(kind, f)
		}
		n, err := strconv.ParseUint(id, 10, 32)
		if err != nil {
			l.V = nil
			return fmt.Sprintf("%s is neither a number nor a known %s on this host; use a numeric id or an existing %s name", sources.QuoteValue(f), kind, kind)
		}
		l.V = append(l.V, uint32(n))
	}
	return ""
}

// lookupID is the id of the user or group (kind) with this name, or "".
func lookupID(kind, name string) string {
	if kind == "group" {
		if g, err := user.LookupGroup(name); err == nil {
			return g.Gid
		}
	} else if u, err := user.Lookup(name); err == nil {
		return u.Uid
	}
	return ""
}

// isListSep separates the entries of a list: commas and blanks.
func isListSep(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' || r == '\r' }

// Printable keeps a value from the environment from writing control
// characters (escape sequences, line breaks) to a terminal.
func Printable(s string) string {
	if !sources.HasControl(s) {
		return s
	}
	q := strconv.Quote(s)
	return q[1 : len(q)-1]
}
