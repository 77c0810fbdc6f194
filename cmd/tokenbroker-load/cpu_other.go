//go:build !linux

package main

import "time"

// peerPID is unknown off Linux.
func peerPID(string) int { return 0 }

// processCPU is unknown off Linux.
func processCPU(int) time.Duration { return -1 }
