package sources_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/sources"
	"github.com/tokenbroker/tokenbroker/sources/oauthtest"
)

// BenchmarkExchange measures one whole token request against the local
// provider over loopback HTTP, client side and provider side together (they
// share the process): building the request, the round trip, reading and
// parsing the answer. Keep-alive connections are reused (POST dialects).
func BenchmarkExchange(b *testing.B) {
	for _, s := range []setup{
		{"firework", oauthtest.Firework, sources.ClientCredentials, []string{"videos:write"}},
		{"ingest", oauthtest.Ingest, sources.ClientCredentials, []string{"read_videos"}},
	} {
		b.Run(s.provider+"_cc", func(b *testing.B) {
			p := oauthtest.StartTest(b, oauthtest.Options{AccessLifetime: time.Hour})
			d, err := sources.Preset(s.provider, s.grant)
			if err != nil {
				b.Fatal(err)
			}
			d.TokenURL = p.TokenURL(s.dialect)
			p.AddClient(oauthtest.Client{ID: "app", Secret: secretValue, Scopes: s.scopes, Dialect: s.dialect})
			e := &sources.Endpoint{Dialect: &d, HTTP: &http.Client{Timeout: 5 * time.Second},
				Client: sources.Client{ID: "app", Secret: sources.NewSecret(secretValue), Scopes: s.scopes}}
			src := &sources.ClientCredentialsSource{Endpoint: e}
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := src.Token(ctx, sources.Token{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
