//go:build !linux

package main

// harden is Linux only.
func harden() error { return nil }
