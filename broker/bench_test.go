package broker

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker/store"
	"github.com/tokenbroker/tokenbroker/broker/store/file"
	"github.com/tokenbroker/tokenbroker/sources"
)

// BenchmarkToken measures the handout path: a map lookup and an atomic load.
func BenchmarkToken(b *testing.B) {
	st, err := file.Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	br := benchBroker(b, st)
	defer br.Close()
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := br.Token(ctx, "cc"); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// benchBroker starts a broker over st with one client-credentials
// credential, "cc", handed out once; the caller closes it.
func benchBroker(b *testing.B, st store.Store) *Broker {
	b.Helper()
	p := newFakeProvider(time.Hour, false)
	br, err := New(Options{Store: st, Logger: quiet}, []Credential{{Name: "cc", Provider: "fake", Source: fakeSource{p, sources.ClientCredentials}, Fingerprint: "cc"}})
	if err != nil {
		b.Fatal(err)
	}
	if err := br.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	if _, err := br.Token(context.Background(), "cc"); err != nil {
		br.Close()
		b.Fatal(err)
	}
	return br
}

// BenchmarkScheduler measures scheduling n credentials' refreshes.
func BenchmarkScheduler(b *testing.B) {
	for _, n := range []int{10_000, 100_000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			creds := make([]*cred, n)
			for i := range creds {
				creds[i] = &cred{idx: -1}
			}
			now := time.Now()
			b.ReportAllocs()
			for b.Loop() {
				s := newScheduler()
				for i, c := range creds {
					c.idx = -1
					s.schedule(c, now.Add(time.Duration(i*7919%n)*time.Millisecond))
				}
				for _, c := range creds {
					s.schedule(c, now.Add(time.Hour))
				}
			}
		})
	}
}
