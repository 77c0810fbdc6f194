package main

import "golang.org/x/sys/unix"

// harden keeps secrets out of core dumps and away from same-user ptrace: a
// non-dumpable process writes no core file, and its /proc/PID/mem and
// environ belong to root. Memory is not mlock-ed: Go cannot lock only the
// secrets, mlockall would pin the whole heap and make reaching the memlock
// limit fatal; the systemd unit keeps the service out of swap instead
// (MemorySwapMax=0).
func harden() error {
	return unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0)
}
