package api

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/tokenbroker/tokenbroker/broker"
	"github.com/tokenbroker/tokenbroker/sources"
)

func TestAppendJSONString(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", `""`},
		{"eyJhbGciOi.JIUzI1-NiJ9_~+/=", `"eyJhbGciOi.JIUzI1-NiJ9_~+/="`},
		{`a"b\c`, `"a\"b\\c"`},
		{"\n\r\t\x00\x1f\x7f", `"\n\r\t\u0000\u001f` + "\x7f" + `"`},
		{"é✓", `"é✓"`},
		{"\u2028\u2029", `"\u2028\u2029"`},
		{"a\xffb", `"a\ufffdb"`},
		{"<&>", `"<&>"`},
	} {
		if got := string(appendJSONString(nil, tc.in)); got != tc.want {
			t.Errorf("appendJSONString(%q) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

// FuzzAppendJSONString checks that the escaper reads back, through
// encoding/json, as what encoding/json itself would have written.
func FuzzAppendJSONString(f *testing.F) {
	for _, s := range []string{"", "token", `"\`, "\x00\n", "é\u2028", "\xff\xc3", "\xed\xa0\x80"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out := appendJSONString(nil, s)
		if !json.Valid(out) || !utf8.Valid(out) {
			t.Fatalf("appendJSONString(%q) = %q: not valid JSON", s, out)
		}
		var got string
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatal(err)
		}
		if want := validRunes(s); got != want {
			t.Fatalf("appendJSONString(%q) reads back as %q, want %q", s, got, want)
		}
	})
}

// validRunes replaces each invalid byte with U+FFFD, as encoding/json does.
func validRunes(s string) string {
	var b strings.Builder
	for _, r := range s {
		b.WriteRune(r)
	}
	return b.String()
}

func TestAppendHandoutAllocs(t *testing.T) {
	now := time.Now()
	h := broker.Handout{AccessToken: sources.NewSecret(strings.Repeat("t", 900)), Expiry: now.Add(time.Hour)}
	buf := make([]byte, 0, 2048)
	if n := testing.AllocsPerRun(100, func() { buf = appendHandout(buf[:0], h, now) }); n != 0 {
		t.Errorf("appendHandout allocates %v times, want 0", n)
	}
}
