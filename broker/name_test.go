package broker

import (
	"errors"
	"testing"
)

// New refuses a name the api could not serve and config would not accept:
// the rule is CheckName, in one place.
func TestNewEnforcesNameRule(t *testing.T) {
	for _, name := range []string{"", "FW", "fw.prod", "a b", string(make([]byte, MaxNameLen+1))} {
		_, err := New(Options{Store: openStore(t, t.TempDir())}, []Credential{{Name: name, Source: fakeSource{}}})
		var ne *NameError
		if !errors.As(err, &ne) {
			t.Errorf("New with name %q: err %v, want a *NameError", name, err)
		}
	}
}
