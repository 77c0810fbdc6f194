// Package api serves the broker's tokens to local services: HTTP/1.1 over a
// Unix socket, one JSON answer per request.
//
//	GET  /v1/tokens/{name}          the credential's access token
//	POST /v1/tokens/{name}/refresh  refresh it now
//	GET  /v1/credentials            every credential's condition, no secrets
//	GET  /healthz                   liveness
//	ANY  /v1/proxy/{name}/{path...} the request, sent to the credential's
//	                                upstream with its token (proxy.go)
//
// It owns the socket file (Listen), the routes, the wire format and the
// middleware around them. It reaches the engine through the Broker
// interface, which it defines; it knows no store, no Redis and no provider.
// Access control is the socket's file mode and the directory it lives in;
// peer-credential checks belong in middleware here.
package api
