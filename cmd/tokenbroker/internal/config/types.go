package config

import (
	"fmt"
	"os/user"
	"reflect"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/kelseyhightower/envconfig"

	"github.com/tokenbroker/tokenbroker/sources"
)

// setting is a field type of the settings structs. envconfig calls Decode
// whenever the variable is set, even to "" (its default tag only when
// unset); decode then treats a blank value as unset. Decode never fails:
// envconfig stops at the first error, and Load reports every problem, so
// each value keeps its own and problem reports it, given the field's tags.
type setting interface {
	envconfig.Decoder
	set() bool
	problem(tag reflect.StructTag) string
}

var (
	_ setting = (*Text)(nil)
	_ setting = (*Raw)(nil)
	_ setting = (*Secret)(nil)
	_ setting = (*Duration)(nil)
	_ setting = (*Number)(nil)
	_ setting = (*Count)(nil)
	_ setting = (*Switch)(nil)
	_ setting = (*Mode)(nil)
	_ setting = (*IDs)(nil)
)

// Text is a plain value without surrounding blanks.
type Text struct{ V string }

func (t *Text) Decode(s string) error            { t.V = strings.TrimSpace(s); return nil }
func (t *Text) set() bool                        { return t.V != "" }
func (t *Text) problem(reflect.StructTag) string { return "" }

// Raw is a value whose blanks may be the point (a scope separator " ");
// only tabs and line breaks around it go.
type Raw struct{ V string }

func (t *Raw) Decode(s string) error            { t.V = strings.Trim(s, "\t\r\n"); return nil }
func (t *Raw) set() bool                        { return t.V != "" }
func (t *Raw) problem(reflect.StructTag) string { return "" }

// Secret is a secret value. Only trailing line breaks go (a secret pasted
// with its line break is common); it is never printed.
type Secret struct {
	V   sources.Secret
	bad bool
}

func (s *Secret) Decode(v string) error {
	v = strings.TrimRight(v, "\r\n")
	*s = Secret{bad: hasControl(v)}
	if v != "" && !s.bad {
		s.V = sources.NewSecret(v)
	}
	return nil
}
func (s *Secret) set() bool { return !s.V.IsZero() || s.bad }
func (s *Secret) problem(reflect.StructTag) string {
	if s.bad {
		return "holds a line break, a control character or invalid UTF-8 (value not shown); fix it"
	}
	return ""
}

// Duration is a duration within the field's min and max tags.
type Duration struct {
	V   time.Duration
	raw string
	err error
}

func (d *Duration) Decode(s string) error {
	d.raw = strings.TrimSpace(s)
	d.V, d.err = time.ParseDuration(d.raw)
	return nil
}
func (d *Duration) set() bool { return d.raw != "" }
func (d *Duration) problem(tag reflect.StructTag) string {
	lo, _ := time.ParseDuration(tag.Get("min"))
	hi, _ := time.ParseDuration(tag.Get("max"))
	switch {
	case d.err != nil:
		return fmt.Sprintf("%s is not a duration; use a number with a unit, e.g. 30s, 5m or 1h30m", show(d.raw))
	case d.V < lo || d.V > hi:
		return fmt.Sprintf("%s is outside %s to %s; use a duration in that range", show(d.raw), lo, hi)
	}
	return ""
}

// Number is a decimal number within the field's min and max tags.
type Number struct {
	V   float64
	raw string
	err error
}

func (n *Number) Decode(s string) error {
	n.raw = strings.TrimSpace(s)
	n.V, n.err = strconv.ParseFloat(n.raw, 64)
	return nil
}
func (n *Number) set() bool { return n.raw != "" }
func (n *Number) problem(tag reflect.StructTag) string {
	lo, _ := strconv.ParseFloat(tag.Get("min"), 64)
	hi, _ := strconv.ParseFloat(tag.Get("max"), 64)
	switch {
	case n.err != nil:
		return fmt.Sprintf("%s is not a number; use one from %g to %g, e.g. %s", show(n.raw), lo, hi, tag.Get("default"))
	case !(n.V >= lo && n.V <= hi): // also refuses NaN
		return fmt.Sprintf("%s is outside %g to %g; use a number in that range, e.g. %s", show(n.raw), lo, hi, tag.Get("default"))
	}
	return ""
}

// Count is a whole number within the field's min and max tags.
type Count struct {
	V   int
	raw string
	err error
}

func (c *Count) Decode(s string) error {
	c.raw = strings.TrimSpace(s)
	c.V, c.err = strconv.Atoi(c.raw)
	return nil
}
func (c *Count) set() bool { return c.raw != "" }
func (c *Count) problem(tag reflect.StructTag) string {
	lo, _ := strconv.Atoi(tag.Get("min"))
	hi, _ := strconv.Atoi(tag.Get("max"))
	switch {
	case c.err != nil:
		return fmt.Sprintf("%s is not a whole number; use one from %d to %d, e.g. %s", show(c.raw), lo, hi, tag.Get("default"))
	case c.V < lo || c.V > hi:
		return fmt.Sprintf("%d is outside %d to %d; use a number in that range, e.g. %s", c.V, lo, hi, tag.Get("default"))
	}
	return ""
}

// Switch is true or false (also yes/no, on/off, 1/0).
type Switch struct {
	V   bool
	raw string
	ok  bool
}

func (b *Switch) Decode(s string) error {
	b.raw = strings.TrimSpace(s)
	switch strings.ToLower(b.raw) {
	case "yes", "on":
		b.V, b.ok = true, true
	case "no", "off":
		b.V, b.ok = false, true
	default:
		v, err := strconv.ParseBool(b.raw)
		b.V, b.ok = v, err == nil
	}
	return nil
}
func (b *Switch) set() bool { return b.raw != "" }
func (b *Switch) problem(reflect.StructTag) string {
	if !b.ok {
		return fmt.Sprintf("%s is not true or false; use one of them", show(b.raw))
	}
	return ""
}

// Mode is a socket's octal mode: read and write bits only, and the owner
// may always connect.
type Mode struct {
	V   uint32
	raw string
	err error
}

func (m *Mode) Decode(s string) error {
	m.raw = strings.TrimSpace(s)
	v, err := strconv.ParseUint(m.raw, 8, 32)
	m.V, m.err = uint32(v), err
	return nil
}
func (m *Mode) set() bool { return m.raw != "" }
func (m *Mode) problem(reflect.StructTag) string {
	switch {
	case m.err != nil:
		return fmt.Sprintf("%s is not an octal mode; use e.g. 0660 (owner and group may connect)", show(m.raw))
	case m.V&^0o666 != 0:
		return fmt.Sprintf("%s sets bits beyond read and write; use e.g. 0660", show(m.raw))
	case m.V&0o200 == 0:
		return fmt.Sprintf("%s does not let the broker's own user connect (tokenbroker status would fail); use e.g. 0660", show(m.raw))
	}
	return ""
}

// IDs is a list of user or group ids or names (the field's "kind" tag),
// separated by commas or blanks; names are looked up on this host.
type IDs struct {
	raw []string
}

func (l *IDs) Decode(s string) error {
	l.raw = strings.FieldsFunc(s, func(r rune) bool { return r == ',' || unicodeSpace(r) })
	return nil
}
func (l *IDs) set() bool { return len(l.raw) > 0 }
func (l *IDs) problem(tag reflect.StructTag) string {
	_, msg := l.resolve(tag.Get("kind"))
	return msg
}

// resolve returns the numeric ids, and what is wrong with the first entry
// that is neither a number nor a known name.
func (l *IDs) resolve(kind string) ([]uint32, string) {
	var ids []uint32
	for _, f := range l.raw {
		n, err := strconv.ParseUint(f, 10, 32)
		if err != nil {
			n, err = lookupID(kind, f)
		}
		if err != nil {
			return nil, fmt.Sprintf("%s is neither a number nor a known %s on this host; use a numeric id or an existing %s name", show(f), kind, kind)
		}
		ids = append(ids, uint32(n))
	}
	return ids, ""
}

func lookupID(kind, name string) (uint64, error) {
	if kind == "group" {
		g, err := user.LookupGroup(name)
		if err != nil {
			return 0, err
		}
		return strconv.ParseUint(g.Gid, 10, 32)
	}
	u, err := user.Lookup(name)
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(u.Uid, 10, 32)
}

func unicodeSpace(r rune) bool { return r == ' ' || r == '\t' || r == '\n' || r == '\r' }

func hasControl(s string) bool {
	return strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f || r == utf8.RuneError })
}

// show quotes a non-secret value for a message, shortened, so that a stray
// control character cannot forge a line.
func show(s string) string {
	const max = 80
	if utf8.RuneCountInString(s) > max {
		s = string([]rune(s)[:max]) + "…"
	}
	return strconv.Quote(s)
}

// Printable keeps a value from the environment from writing control
// characters (escape sequences, line breaks) to a terminal.
func Printable(s string) string {
	if !hasControl(s) {
		return s
	}
	q := strconv.Quote(s)
	return q[1 : len(q)-1]
}
