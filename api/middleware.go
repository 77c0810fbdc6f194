package api

import (
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"sync"
	"time"
)

// chain wraps h in middleware, the first outermost.
func chain(h http.Handler, mw ...func(http.Handler) http.Handler) http.Handler {
	for i := len(mw) - 1; i >= 0; i-- {
		h = mw[i](h)
	}
	return h
}

// recoverPanics turns a handler's panic into a logged error and a 500 JSON
// answer. The log names the method and path and the panic, never the
// request's headers or body. When the answer had already begun, the
// connection is aborted instead, so a client never takes half an answer for
// a whole one.
func recoverPanics(log *slog.Logger) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			tw := newTrackingWriter(w)
			defer func() {
				v := recover()
				wrote := tw.status != 0
				tw.release()
				if v == nil {
					return
				}
				if v == http.ErrAbortHandler {
					panic(v)
				}
				log.Error("handler panicked", "method", logSafe(r.Method), "path", logSafe(r.URL.EscapedPath()),
					"panic", fmt.Sprint(v), "stack", string(debug.Stack()))
				if wrote {
					panic(http.ErrAbortHandler)
				}
				writeError(w, http.StatusInternalServerError, "internal_error",
					"the broker failed while answering this request; its log says why")
			}()
			next.ServeHTTP(tw, r)
		})
	}
}

// logAccess logs one Debug line per request: method, path, status and
// duration, never a body. With Debug off it costs one Enabled call.
func logAccess(log *slog.Logger) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ctx := r.Context()
			if !log.Enabled(ctx, slog.LevelDebug) {
				next.ServeHTTP(w, r)
				return
			}
			start := time.Now()
			tw := newTrackingWriter(w)
			defer tw.release()
			next.ServeHTTP(tw, r)
			status := tw.status
			if status == 0 {
				status = http.StatusOK
			}
			log.LogAttrs(ctx, slog.LevelDebug, "request",
				slog.String("method", logSafe(r.Method)),
				slog.String("path", logSafe(r.URL.EscapedPath())),
				slog.Int("status", status),
				slog.Duration("duration", time.Since(start)))
		})
	}
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
