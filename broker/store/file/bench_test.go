package file

import (
	"context"
	"testing"

	"github.com/tokenbroker/tokenbroker/broker/store/storetest"
)

// BenchmarkFileStoreSave measures the embedded store's durable write: read
// the stored generation, write a temporary file, fsync, rename, fsync the
// directory. It bounds how fast one broker can refresh with a FileStore,
// since saves are serialised.
func BenchmarkFileStoreSave(b *testing.B) {
	s, err := Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	var gen uint64
	b.ReportAllocs()
	for b.Loop() {
		gen++
		if err := s.Save(ctx, "cred.0123456789abcdef", storetest.BenchRecord(gen)); err != nil {
			b.Fatal(err)
		}
	}
}
