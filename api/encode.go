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
	dst = h.Expiry.UTC().AppendFormat(dst, time.RFC3339)
	return append(dst, "\"}\n"...)
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string. Tokens are normally printable
// ASCII and are copied in runs; quotes, backslashes and control characters
// are escaped, invalid UTF-8 becomes U+FFFD (as encoding/json does), and
// U+2028 and U+2029 are escaped so the output is also valid JavaScript.
func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
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
