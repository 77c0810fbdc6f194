//go:build crashtest

package crashpoint

import (
	"fmt"
	"os"
	"syscall"
)

// Enabled reports whether this build can crash at a step.
const Enabled = true

var armed string

// Arm makes At kill this process at step (none if ""). Call it before
// any refresh starts.
func Arm(step string) error {
	armed = step
	return nil
}

// At kills this process with SIGKILL when step is the armed one.
func At(step string) {
	if armed != "" && step == armed {
		fmt.Fprintf(os.Stderr, "tokenbroker: crash point %s: SIGKILL\n", step)
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	}
}
