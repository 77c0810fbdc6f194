package main

import (
	"os"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/api"
	"github.com/tokenbroker/tokenbroker/broker"
)

// serve drops its own variables from the process environment once read
// (Go's index of them is megabytes at 5,000 credentials); every other
// variable stays, the first of duplicates winning as os.Getenv has it.
func TestShedOwnVariables(t *testing.T) {
	t.Setenv("TOKENBROKER_SHED_TEST_CLIENT_SECRET", "s3cret")
	t.Setenv("SHED_TEST_KEEP", "first")
	environ := append(os.Environ(), "SHED_TEST_KEEP=second", "=no-name", "no-equals")
	shedOwnVariables(environ)
	if v, ok := os.LookupEnv("TOKENBROKER_SHED_TEST_CLIENT_SECRET"); ok {
		t.Errorf("TOKENBROKER_SHED_TEST_CLIENT_SECRET still set: %q", v)
	}
	if v := os.Getenv("SHED_TEST_KEEP"); v != "first" {
		t.Errorf("SHED_TEST_KEEP = %q, want first", v)
	}
	if os.Getenv("PATH") == "" {
		t.Error("PATH was dropped")
	}
}

// The start-up round ends when every credential that started pending has
// had a refresh attempt, counting those made before Start returned, and at
// once when none started pending.
func TestStartupRound(t *testing.T) {
	over := func(s *startupRound) bool { return s.done == nil }
	pending := []broker.Status{{Name: "a", State: broker.StatePending}, {Name: "b", State: broker.StateOK}, {Name: "c", State: broker.StatePending}}
	m := api.NewMetrics(api.MetricsOptions{})

	s := &startupRound{Metrics: m, want: -1, done: make(chan struct{})}
	s.Refreshed("a", "firework", broker.ResultOK, time.Millisecond) // before Start returned
	s.expect(pending)
	if over(s) {
		t.Fatal("over after 1 of 2 first attempts")
	}
	s.Refreshed("c", "firework", broker.ResultTransient, time.Millisecond)
	if !over(s) {
		t.Fatal("not over after 2 of 2 first attempts")
	}
	s.Refreshed("c", "firework", broker.ResultOK, time.Millisecond) // closes nothing twice

	s = &startupRound{Metrics: m, want: -1, done: make(chan struct{})}
	s.expect([]broker.Status{{Name: "b", State: broker.StateOK}})
	if !over(s) {
		t.Fatal("not over with no credential pending")
	}
}
