package seal

import "testing"

func testKey(id string, b byte) SealKey {
	k := SealKey{ID: id}
	for i := range k.Key {
		k.Key[i] = b + byte(i)
	}
	return k
}

func sealer(t testing.TB, keys ...SealKey) *Sealer {
	t.Helper()
	s, err := NewSealer(keys)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
