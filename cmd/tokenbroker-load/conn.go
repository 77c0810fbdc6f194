package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"
)

// The load client: one raw keep-alive connection per client goroutine,
// writing a request built once and reading the answer with a small HTTP/1.1
// response reader. It is the same code for the broker and the baseline, and
// it allocates nothing per request, so the client's own cost (which shares
// the machine with the server under test) is as small and as equal as it can
// be. -reader std swaps in net/http's ReadResponse to cross-check it.

// buildRequest is the request every client sends: what api/client sends,
// less the User-Agent's variation.
func buildRequest(name string) []byte {
	return []byte("GET /v1/tokens/" + name + " HTTP/1.1\r\n" +
		"Host: tokenbroker\r\n" +
		"User-Agent: tokenbroker-load\r\n" +
		"X-Tokenbroker: 1\r\n" +
		"Accept: application/json\r\n" +
		"\r\n")
}

// wantInBody must appear in every successful answer's body.
var wantInBody = []byte(`"access_token"`)

type clientConn struct {
	socket string
	std    bool // read with http.ReadResponse
	c      net.Conn
	br     *bufio.Reader
	body   []byte // the last answer's body; reused
	// deadline, when set, bounds every connection's whole life: one
	// deadline per run rather than one per request.
	deadline time.Time
}

func dialConn(socket string, std bool, deadline time.Time) (*clientConn, error) {
	k := &clientConn{socket: socket, std: std, body: make([]byte, 0, 2048), deadline: deadline}
	if err := k.redial(); err != nil {
		return nil, err
	}
	return k, nil
}

func (k *clientConn) redial() error {
	k.close()
	c, err := net.DialTimeout("unix", k.socket, 5*time.Second)
	if err != nil {
		return err
	}
	if !k.deadline.IsZero() {
		_ = c.SetDeadline(k.deadline)
	}
	k.c = c
	if k.br == nil {
		k.br = bufio.NewReaderSize(c, 4096)
	} else {
		k.br.Reset(c)
	}
	return nil
}

func (k *clientConn) close() {
	if k.c != nil {
		k.c.Close()
		k.c = nil
	}
}

// errBadAnswer is a well-framed answer that is not a handout.
type errBadAnswer struct {
	status int
	reason string
}

func (e *errBadAnswer) Error() string {
	return fmt.Sprintf("answer %d: %s", e.status, e.reason)
}

// do sends req and reads the whole answer. It returns nil only for a 200
// whose body holds "access_token". A transport or framing error leaves the
// connection unusable (the caller redials); a bad answer (*errBadAnswer)
// does not, unless the server asked to close.
func (k *clientConn) do(req []byte) (reusable bool, err error) {
	if k.c == nil {
		if err := k.redial(); err != nil {
			return false, err
		}
	}
	if _, err := k.c.Write(req); err != nil {
		return false, err
	}
	var status int
	var keep bool
	if k.std {
		status, keep, err = k.readStd()
	} else {
		status, keep, err = k.readFast()
	}
	if err != nil {
		return false, err
	}
	if status != http.StatusOK {
		return keep, &errBadAnswer{status, "status is not 200"}
	}
	if !bytes.Contains(k.body, wantInBody) {
		return keep, &errBadAnswer{status, "body has no access_token"}
	}
	return keep, nil
}

func (k *clientConn) readStd() (status int, keep bool, err error) {
	resp, err := http.ReadResponse(k.br, nil)
	if err != nil {
		return 0, false, err
	}
	k.body = k.body[:0]
	buf := bytes.NewBuffer(k.body)
	_, err = buf.ReadFrom(resp.Body)
	resp.Body.Close()
	k.body = buf.Bytes()
	if err != nil {
		return 0, false, err
	}
	return resp.StatusCode, !resp.Close, nil
}

var (
	errFraming   = errors.New("malformed HTTP answer")
	errLongLine  = errors.New("HTTP answer line too long")
	errTooBig    = errors.New("HTTP answer body over 1 MiB")
	maxBodyBytes = 1 << 20
)

// readFast reads one HTTP/1.x answer: status line, headers (only
// Content-Length, Transfer-Encoding and Connection matter), then the body
// framed by Content-Length, chunked encoding or the connection's end.
func (k *clientConn) readFast() (status int, keep bool, err error) {
	for {
		line, err := k.line()
		if err != nil {
			return 0, false, err
		}
		// "HTTP/1.1 200 OK"
		if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || line[8] != ' ' {
			return 0, false, errFraming
		}
		status, err = atoi3(line[9:12])
		if err != nil {
			return 0, false, err
		}
		http11 := line[7] == '1'
		keep = http11
		length := -1
		chunked := false
		for {
			h, err := k.line()
			if err != nil {
				return 0, false, err
			}
			if len(h) == 0 {
				break
			}
			colon := bytes.IndexByte(h, ':')
			if colon <= 0 {
				return 0, false, errFraming
			}
			name, val := h[:colon], bytes.TrimSpace(h[colon+1:])
			switch {
			case asciiEqualFold(name, "content-length"):
				n, err := strconv.Atoi(string(val))
				if err != nil || n < 0 {
					return 0, false, errFraming
				}
				length = n
			case asciiEqualFold(name, "transfer-encoding"):
				if !asciiEqualFold(val, "chunked") {
					return 0, false, fmt.Errorf("unsupported Transfer-Encoding %q", val)
				}
				chunked = true
			case asciiEqualFold(name, "connection"):
				if asciiEqualFold(val, "close") {
					keep = false
				} else if asciiEqualFold(val, "keep-alive") {
					keep = true
				}
			}
		}
		if status >= 100 && status < 200 && status != http.StatusSwitchingProtocols {
			continue // an interim answer; the real one follows
		}
		k.body = k.body[:0]
		switch {
		case status == http.StatusNoContent || status == http.StatusNotModified:
		case chunked:
			err = k.readChunked()
		case length >= 0:
			if length > maxBodyBytes {
				return 0, false, errTooBig
			}
			k.body = grow(k.body, length)
			_, err = io.ReadFull(k.br, k.body)
		default: // delimited by the connection's end
			keep = false
			var b bytes.Buffer
			_, err = b.ReadFrom(io.LimitReader(k.br, int64(maxBodyBytes)))
			k.body = append(k.body, b.Bytes()...)
		}
		if err != nil {
			return 0, false, err
		}
		return status, keep, nil
	}
}

func (k *clientConn) readChunked() error {
	for {
		line, err := k.line()
		if err != nil {
			return err
		}
		if i := bytes.IndexByte(line, ';'); i >= 0 {
			line = line[:i]
		}
		n, err := strconv.ParseUint(string(bytes.TrimSpace(line)), 16, 31)
		if err != nil {
			return errFraming
		}
		if n == 0 {
			for { // trailers
				t, err := k.line()
				if err != nil {
					return err
				}
				if len(t) == 0 {
					return nil
				}
			}
		}
		if len(k.body)+int(n) > maxBodyBytes {
			return errTooBig
		}
		start := len(k.body)
		k.body = grow(k.body, start+int(n))
		if _, err := io.ReadFull(k.br, k.body[start:]); err != nil {
			return err
		}
		if crlf, err := k.line(); err != nil || len(crlf) != 0 {
			return errFraming
		}
	}
}

// line reads one line without its CRLF (or LF). The slice is valid until
// the next read.
func (k *clientConn) line() ([]byte, error) {
	l, err := k.br.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			return nil, errLongLine
		}
		if errors.Is(err, io.EOF) && len(l) > 0 {
			return nil, io.ErrUnexpectedEOF
		}
		return nil, err
	}
	l = l[:len(l)-1]
	if len(l) > 0 && l[len(l)-1] == '\r' {
		l = l[:len(l)-1]
	}
	return l, nil
}

// grow returns b resized to n bytes, reusing its array when it can.
func grow(b []byte, n int) []byte {
	if cap(b) >= n {
		return b[:n]
	}
	nb := make([]byte, n, max(n, 2*cap(b)))
	copy(nb, b)
	return nb
}

func atoi3(b []byte) (int, error) {
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, errFraming
		}
		n = n*10 + int(c-'0')
	}
	return n, nil
}

// asciiEqualFold reports whether b equals the lower-case ASCII s, ignoring
// case.
func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}
