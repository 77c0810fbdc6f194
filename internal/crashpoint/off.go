//go:build !crashtest

package crashpoint

import "errors"

// Enabled reports whether this build can crash at a step.
const Enabled = false

// Arm refuses any step: this build has no crash points.
func Arm(step string) error {
	if step == "" {
		return nil
	}
	return errors.New("TOKENBROKER_TEST_CRASH_AT is for crash tests and works only in a binary built with -tags crashtest; unset it")
}

// At does nothing in this build.
func At(string) {}
