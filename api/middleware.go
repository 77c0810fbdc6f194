package api

import (
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"sync"
	"time"
)

// guard is the outermost layer: it turns a handler's panic into a logged
// error and a 500 JSON answer, and logs one Debug line per request (method,
// path, status and duration, never a body). It is one wrapper, with one
// pooled trackingWriter, where it used to be two (access log outside, panic
// recovery inside); what it logs and answers is the same:
//
//   - The panic log names the method and path and the panic, never the
//     request's headers or body.
//   - When the answer had already begun, the connection is aborted instead
//     (http.ErrAbortHandler), so a client never takes half an answer for a
//     whole one; no access line is written then, as before.
//   - A recovered panic is logged as a 500 in the access line.
//   - With Debug off the access log costs one Enabled call.
func guard(log *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		logReq := log.Enabled(r.Context(), slog.LevelDebug)
		var start time.Time
		if logReq {
			start = time.Now()
		}
		tw := newTrackingWriter(w)
		defer func() {
			v := recover()
			status := tw.status
			tw.release()
			if v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				log.Error("handler panicked", "method", logSafe(r.Method), "path", logSafe(r.URL.EscapedPath()),
					"panic", fmt.Sprint(v), "stack", string(debug.Stack()))
				if status != 0 {
					panic(http.ErrAbortHandler)
				}
				writeError(w, http.StatusInternalServerError, "internal_error",
					"the broker failed while answering this request; its log says why")
				status = http.StatusInternalServerError
			}
			if !logReq {
				return
			}
			if status == 0 {
				status = http.StatusOK
			}
			log.LogAttrs(r.Context(), slog.LevelDebug, "request",
				slog.String("method", logSafe(r.Method)),
				slog.String("path", logSafe(r.URL.EscapedPath())),
				slog.Int("status", status),
				slog.Duration("duration", time.Since(start)))
		}()
		next.ServeHTTP(tw, r)
	})
}

// maxLogged bounds request-supplied strings in the log.
const maxLogged = 200

// logSafe bounds a request-supplied string for the log; the handler escapes
// the rest.
func logSafe(s string) string {
	if len(s) > maxLogged {
		return s[:maxLogged] + "..."
	}
	return s
}

// trackingWriter remembers the status a handler answered. It is pooled:
// handlers must not keep the ResponseWriter after returning, which net/http
// forbids anyway.
type trackingWriter struct {
	http.ResponseWriter
	status int // 0 until the answer begins
}

var trackingWriters = sync.Pool{New: func() any { return new(trackingWriter) }}

func newTrackingWriter(w http.ResponseWriter) *trackingWriter {
	tw := trackingWriters.Get().(*trackingWriter)
	tw.ResponseWriter = w
	return tw
}

func (tw *trackingWriter) release() {
	*tw = trackingWriter{}
	trackingWriters.Put(tw)
}

func (tw *trackingWriter) WriteHeader(code int) {
	if tw.status == 0 && code >= 200 {
		tw.status = code
	}
	tw.ResponseWriter.WriteHeader(code)
}

func (tw *trackingWriter) Write(p []byte) (int, error) {
	if tw.status == 0 {
		tw.status = http.StatusOK
	}
	return tw.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (tw *trackingWriter) Unwrap() http.ResponseWriter { return tw.ResponseWriter }
