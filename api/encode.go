package api

import (
	"net/http"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/tokenbroker/tokenbroker/broker"
)

// Header values shared by every answer. net/http only reads them.
var (
	jsonContentType = []string{"application/json"}
	noStore         = []string{"no-store"}
)

// handoutBufs holds the buffers handouts are encoded into. A buffer that grew
// past maxPooledBuf (a huge token) is dropped rather than kept.
var handoutBufs = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

const maxPooledBuf = 64 << 10

// writeHandout answers 200 with h, encoded by hand: this is the hot path.
func writeHandout(w http.ResponseWriter, h broker.Handout, now time.Time) {
	bp := handoutBufs.Get().(*[]byte)
	buf := appendHandout((*bp)[:0], h, now)
	hdr := w.Header()
	hdr["Content-Type"] = jsonContentType
	hdr["Cache-Control"] = noStore
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(buf) // the ResponseWriter copies buf
	clear(buf)          // no token lingers in a pooled buffer
	if cap(buf) <= maxPooledBuf {
		*bp = buf[:0]
		handoutBufs.Put(bp)
	}
}

// appendHandout appends the JSON answer for h:
//
//	{"access_token":"...","token_type":"Bearer","expires_in":3599,"expires_at":"2026-01-02T03:04:05Z"}
//
// expires_in is whole seconds left at now, rounded down; expires_at is in UTC.
func appendHandout(dst []byte, h broker.Handout, now time.Time) []byte {
	secs := int64(h.Expiry.Sub(now) / time.Second)
	if secs < 0 {
		secs = 0
	}
	dst = append(dst, `{"access_token":`...)
	dst = appendJSONString(dst, h.AccessToken.Reveal())
	dst = append(dst, `,"token_type":"Bearer","expires_in":`...)
	dst = strconv.AppendInt(dst, secs, 10)
	dst = append(dst, `,"expires_at":"`...)
	dst = appendRFC3339UTC(dst, h.Expiry)
	return append(dst, "\"}\n"...)
}

// appendRFC3339UTC appends t in UTC as time.RFC3339 formats it
// ("2006-01-02T15:04:05Z"), without parsing a layout: years 0 to 9999 are
// written digit by digit, others (which RFC 3339 cannot express anyway) by
// AppendFormat.
func appendRFC3339UTC(dst []byte, t time.Time) []byte {
	t = t.UTC()
	year, month, day := t.Date()
	if year < 0 || year > 9999 {
		return t.AppendFormat(dst, time.RFC3339)
	}
	hour, minute, sec := t.Clock()
	return append(dst,
		byte('0'+year/1000), byte('0'+year/100%10), byte('0'+year/10%10), byte('0'+year%10), '-',
		byte('0'+int(month)/10), byte('0'+int(month)%10), '-',
		byte('0'+day/10), byte('0'+day%10), 'T',
		byte('0'+hour/10), byte('0'+hour%10), ':',
		byte('0'+minute/10), byte('0'+minute%10), ':',
		byte('0'+sec/10), byte('0'+sec%10), 'Z')
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string. Tokens are normally printable
// ASCII and are copied in runs; quotes, backslashes and control characters
// are escaped, invalid UTF-8 becomes U+FFFD (as encoding/json does), and
// U+2028 and U+2029 are escaped so the output is also valid JavaScript.
func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	// Tokens rarely hold a byte that needs a look: find the first one eight
	// bytes at a time and copy what comes before it at once.
	plain := plainPrefix(s)
	if plain == len(s) {
		dst = append(dst, s...)
		return append(dst, '"')
	}
	start := 0
	for i := plain; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// writeError answers status with {"error":code,"error_description":desc}.
// It returns status, for the caller's metrics.
func writeError(w http.ResponseWriter, status int, code, desc string) int {
	writeErrorExtra(w, status, code, desc, nil)
	return status
}

// writeErrorExtra is writeError with extra members appended by extra.
func writeErrorExtra(w http.ResponseWriter, status int, code, desc string, extra func([]byte) []byte) {
	b := make([]byte, 0, 128+len(desc))
	b = append(b, `{"error":`...)
	b = appendJSONString(b, code)
	b = append(b, `,"error_description":`...)
	b = appendJSONString(b, desc)
	if extra != nil {
		b = extra(b)
	}
	b = append(b, "}\n"...)
	hdr := w.Header()
	hdr["Content-Type"] = jsonContentType
	hdr["Cache-Control"] = noStore
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// Word-at-a-time byte tests (Hacker's Delight, "Bit Twiddling Hacks").
const (
	ones  = 0x0101010101010101
	highs = 0x8080808080808080
)

// plainPrefix returns the length of the longest prefix of s that
// appendJSONString copies as it is: printable ASCII other than '"' and '\\'.
func plainPrefix(s string) int {
	i := 0
	for ; i+8 <= len(s); i += 8 {
		w := s[i : i+8] // one bounds check for the eight loads, which the compiler merges
		x := uint64(w[0]) | uint64(w[1])<<8 | uint64(w[2])<<16 | uint64(w[3])<<24 |
			uint64(w[4])<<32 | uint64(w[5])<<40 | uint64(w[6])<<48 | uint64(w[7])<<56
		if needsLook(x) {
			break
		}
	}
	for ; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c >= utf8.RuneSelf {
			return i
		}
	}
	return len(s)
}

// needsLook reports whether one of x's eight bytes is >= 0x80, < 0x20, '"'
// or '\\'. It never misses one (a byte of the word that is below the bound
// always sets its own high bit in the test, whatever the borrows do), and a
// word it flags is scanned byte by byte anyway.
func needsLook(x uint64) bool {
	ctl := (x - ones*0x20) &^ x // a byte < 0x20
	q := x ^ (ones * '"')       // a '"' becomes 0
	bs := x ^ (ones * '\\')     // a '\\' becomes 0
	return (x|ctl|(q-ones)&^q|(bs-ones)&^bs)&highs != 0
}

// AppendHandout appends h as the socket answers it (see appendHandout),
// for other outlets of the same object, such as a token file.
func AppendHandout(dst []byte, h broker.Handout, now time.Time) []byte {
	return appendHandout(dst, h, now)
}
