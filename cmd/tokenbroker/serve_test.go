package main

import (
	"os"
	"testing"
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
