package config

import (
	"cmp"
	"fmt"
	"os"
	"os/user"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kelseyhightower/envconfig"

	"github.com/tokenbroker/tokenbroker/sources"
)

// setting is a field type of the settings structs. envconfig calls Decode
// whenever the variable is set, even to "" (its default tag only when
// unset). Decode never fails: envconfig stops at the first error, and Load
// reports every problem, so a value keeps what is wrong with it and check,
// given the field's tags, says it.
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

// Value is a setting read from text: a string, a number, a duration or a
// file mode (octal), without the blanks around it. When check finds a
// problem, V is left zero.
type Value[T ~string | ~int | ~int64 | ~uint32 | ~float64] struct {
	V   T
	raw string
	err error
}

// separator is a scope separator, whose blank may be the point: only tabs
// and line breaks around it go.
type separator string

// notA completes "VALUE is not ..." for a value that does not parse, by the
// field's type tag.
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
func (v *Value[T]) check(tag reflect.StructTag) string {
	typ, lo, hi := tag.Get("type"), tag.Get("min"), tag.Get("max")
	var l, h Value[T]
	l.Decode(lo)
	h.Decode(hi)
	words := strings.Split(typ, "|")
	s, isString := any(&v.V).(*string)
	msg := ""
	switch {
	case v.err != nil:
		msg = fmt.Sprintf("%s is not %s", sources.QuoteValue(v.raw), notA[typ])
		if hi != "" {
			msg += fmt.Sprintf(" from %s to %s", lo, hi)
		}
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
		var zero T
		v.V = zero
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
		n, err := strconv.ParseUint(f, 10, 32)
		if err != nil {
			n, err = lookupID(kind, f)
		}
		if err != nil {
			l.V = nil
			return fmt.Sprintf("%s is neither a number nor a known %s on this host; use a numeric id or an existing %s name", sources.QuoteValue(f), kind, kind)
		}
		l.V = append(l.V, uint32(n))
	}
	return ""
}

func lookupID(kind, name string) (uint64, error) {
	var id string
	if kind == "group" {
		g, err := user.LookupGroup(name)
		if err != nil {
			return 0, err
		}
		id = g.Gid
	} else {
		u, err := user.Lookup(name)
		if err != nil {
			return 0, err
		}
		id = u.Uid
	}
	return strconv.ParseUint(id, 10, 32)
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
