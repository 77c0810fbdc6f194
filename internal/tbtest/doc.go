// Package tbtest holds what tokenbroker's tests share, written once: a log
// sink safe for many goroutines, polling with a deadline, directories short
// enough for a Unix socket, and the home and environment of a daemon under
// end-to-end test.
//
// It imports nothing of tokenbroker, so the tests of any package, internal
// tests included (package broker, package oauthtest), can use it without an
// import cycle. Fakes that need tokenbroker's types live in packages below
// it (fakebroker). The client library (api/client) is a module of its own
// and keeps its helpers.
package tbtest
