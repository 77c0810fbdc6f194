package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net/http"
	"time"

	"github.com/tokenbroker/tokenbroker/api/client"
	"golang.org/x/oauth2"
)

func ExampleNew() {
	c := client.New("") // $TOKENBROKER_SOCKET, else the default path
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tok, err := c.Token(ctx, "firework")
	if err != nil {
		log.Fatal(err) // names the credential and says what to do
	}
	fmt.Println(tok) // prints no secret: "Bearer token [redacted], expires ..."
}

func ExampleClient_TokenSource() {
	c := client.New("")
	defer c.Close()

	// The token is cached in the process: most calls cost an atomic load.
	var ts oauth2.TokenSource = c.TokenSource("firework", nil)
	tok, err := ts.Token()
	if err != nil {
		log.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodGet, "https://api.firework.com/api/v1/videos/123", nil)
	tok.SetAuthHeader(req) // the token is shared: read it, never modify it

	// Another cache for the same credential, refreshed 5 minutes before
	// expiry, which waits up to 30 s for a restarting broker.
	ts = c.TokenSource("firework", &client.TokenSourceOptions{MinTTL: 5 * time.Minute, RetryFor: 30 * time.Second})
	_ = ts
}

func ExampleClient_Transport() {
	c := client.New("")
	defer c.Close()

	// Every request carries the token; a 401 makes the broker refresh it
	// and the request is sent once more.
	hc := &http.Client{
		Transport: c.Transport("firework", http.DefaultTransport),
		Timeout:   30 * time.Second,
	}
	resp, err := hc.Get("https://api.firework.com/api/v1/videos/123")
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	fmt.Println(resp.Status)
}

func ExampleClient_HTTPClient() {
	c := client.New("")
	defer c.Close()
	resp, err := c.HTTPClient("firework").Get("https://api.firework.com/api/v1/videos/123")
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
}

// Without a broker, a token source retries for RetryFor (default 5 s),
// then returns an error matching ErrUnreachable that names the socket.
func ExampleClient_TokenSource_unreachable() {
	c := client.New("/nonexistent/tokenbroker.sock")
	defer c.Close()
	_, err := c.TokenSource("firework", &client.TokenSourceOptions{RetryFor: -1}).Token()
	fmt.Println(errors.Is(err, client.ErrUnreachable))
	// Output: true
}
