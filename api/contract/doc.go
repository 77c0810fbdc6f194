// Package contract has no code: its tests keep the API server (package
// api, this module) and the client library (module
// github.com/tokenbroker/tokenbroker/api/client, which cannot import the
// daemon) in step, by decoding the real server's answers with the client.
// The client module's own tests run against a stand-in that answers as
// the server does; these tests are what hold the server to the client.
package contract
