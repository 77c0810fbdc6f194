package client

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"
)

// DefaultRetryFor is how long a TokenSource keeps asking while the broker
// is unreachable (restarting) or has no token yet, when
// TokenSourceOptions.RetryFor is 0.
const DefaultRetryFor = 5 * time.Second

// The backoff between two attempts: 50 ms, doubling, at most 1 s.
const (
	retryFirst = 50 * time.Millisecond
	retryMax   = time.Second
)

// retryable reports whether asking again shortly may succeed: nothing
// answers on the socket (the broker is restarting), or the broker has no
// valid token yet (503 token_unavailable). Every other answer, such as 404
// unknown_credential or 400 invalid_name, is final.
func retryable(err error) bool {
	if errors.Is(err, ErrUnreachable) {
		return true
	}
	var e *Error
	return errors.As(err, &e) && e.Status == http.StatusServiceUnavailable && e.Code == "token_unavailable"
}

// retry calls fn until it succeeds, fails for good (see retryable), ctx
// ends, or bound has passed since the first attempt started (an attempt in
// progress is not cut short). bound <= 0 means one attempt. It returns
// fn's last error; when ctx ended, that error also wraps ctx's.
func retry(ctx context.Context, bound time.Duration, fn func(context.Context) error) error {
	deadline := time.Now().Add(bound)
	err := fn(ctx)
	if err == nil || bound <= 0 || !retryable(err) {
		return err
	}
	wait := retryFirst
	var t *time.Timer
	defer func() {
		if t != nil {
			t.Stop()
		}
	}()
	for {
		if ctx.Err() != nil {
			return withCtxErr(err, ctx)
		}
		left := time.Until(deadline)
		if left <= 0 {
			return err
		}
		d := min(wait, left)
		if t == nil {
			t = time.NewTimer(d)
		} else {
			t.Reset(d)
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return withCtxErr(err, ctx)
		}
		wait = min(2*wait, retryMax)
		last := err
		if err = fn(ctx); err != nil && ctx.Err() != nil && isContextError(err) {
			// Cut short: the previous error says more.
			return withCtxErr(last, ctx)
		}
		if err == nil || !retryable(err) {
			return err
		}
	}
}

// withCtxErr makes err, the last attempt's error, also match ctx's error.
func withCtxErr(err error, ctx context.Context) error {
	if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
		return fmt.Errorf("%w: %w", err, cerr)
	}
	return err
}
