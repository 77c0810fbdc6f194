// Command go-client calls an HTTP API with an access token from tokenbroker.
//
//	TOKENBROKER_SOCKET=/run/tokenbroker/tokenbroker.sock go run ./examples/go-client
package main

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"time"

	"github.com/tokenbroker/tokenbroker/api/client"
)

func main() {
	c := client.New("") // $TOKENBROKER_SOCKET, else the default path
	defer c.Close()

	// An oauth2.TokenSource for libraries that take one. The token is cached
	// in the process until it nears expiry: most calls cost an atomic load.
	tok, err := c.TokenSource("firework", nil).Token()
	if err != nil {
		log.Fatal(err) // names the credential and says what to do
	}
	fmt.Println("token expires", tok.Expiry.Format(time.RFC3339))

	// An *http.Client whose requests carry the token, from the same cache.
	// When the API answers 401, the broker refreshes the token and the
	// request is sent once more.
	hc := c.HTTPClient("firework")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://api.firework.com/api/v1/videos/123", nil)
	if err != nil {
		log.Fatal(err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		log.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		log.Fatalf("the API answered %s: %s", resp.Status, body)
	}
	fmt.Println(resp.Status, string(body))
}
