package api

import (
	"net/url"
	"path"
	"strings"
	"testing"
)

// Whatever the caller sends after /v1/proxy/{name}, a path the proxy
// forwards stays under the upstream's prefix for a server that decodes it
// once or twice and then resolves dot segments, and holds no slash or
// backslash that a decoding makes.
func FuzzUpstreamPath(f *testing.F) {
	for _, s := range []string{"", "/", "/a/b", "/a/../b", "/%2e%2e/x", "/.%2E/x", "/%252e%252e/x", "/a%2fb",
		"/a%252Fb", "/..%5c..", "/a\\b", "/%", "/%zz", "/a//b", "/a/", "/%25", "/a;b=c", "/%00", "/./a", "/a/%2e"} {
		f.Add("/base", s)
		f.Add("", s)
	}
	f.Fuzz(func(t *testing.T, prefix, rest string) {
		if _, err := upstreamPath("", prefix); err != nil || strings.HasSuffix(prefix, "/") || prefix != "" && prefix[0] != '/' {
			return // ParseUpstream refuses such a prefix
		}
		got, err := upstreamPath(prefix, rest)
		if err != nil {
			return
		}
		want := prefix + rest
		if rest == "" {
			want = prefix
			if prefix == "" {
				want = "/"
			}
		}
		if got != want {
			t.Fatalf("upstreamPath(%q, %q) = %q; a forwarded path is the prefix and the path as sent", prefix, rest, got)
		}
		s, base := got, prefix // both decoded alike
		for i := 0; i < 2; i++ {
			if c := path.Clean("/" + s); base != "" && c != base && !strings.HasPrefix(c, base+"/") {
				t.Fatalf("upstreamPath(%q, %q) = %q, which %d decodings and dot-segment removal take out of the prefix: %q", prefix, rest, got, i, c)
			}
			for _, seg := range strings.Split(strings.TrimPrefix(s, base), "/") {
				if seg == "." || seg == ".." || strings.Contains(seg, "\\") {
					t.Fatalf("upstreamPath(%q, %q) = %q, which after %d decodings holds the segment %q", prefix, rest, got, i, seg)
				}
			}
			d, err := url.PathUnescape(s)
			db, errb := url.PathUnescape(base)
			if err != nil || errb != nil {
				break
			}
			if i == 0 && strings.Count(d, "/") != strings.Count(s, "/") {
				t.Fatalf("upstreamPath(%q, %q) = %q, which holds an encoded slash", prefix, rest, got)
			}
			s, base = d, db
		}
	})
}
