package broker

import (
	"fmt"
	"net/url"
	"slices"
	"strings"

	"github.com/tokenbroker/tokenbroker/sources"
)

// MaxNameLen is the longest credential name.
const MaxNameLen = 64

// NameError says why a credential name is refused.
type NameError struct {
	Name    string
	Problem string // what is wrong and what to do
}

func (e *NameError) Error() string { return fmt.Sprintf("credential name %q: %s", e.Name, e.Problem) }

// CheckName is the credential-name rule, the one every package applies: 1
// to MaxNameLen characters of a-z, 0-9, _ and -, so that a name is a URL
// path segment, a metric label and (upper-cased) part of a variable name.
func CheckName(name string) error {
	switch {
	case name == "":
		return &NameError{name, "is empty; name the credential"}
	case len(name) > MaxNameLen:
		return &NameError{name, fmt.Sprintf("is %d characters long; use at most %d", len(name), MaxNameLen)}
	case strings.ContainsAny(name, " \t\r\n"):
		return &NameError{name, "holds spaces; separate names with commas"}
	case !ValidName(name) && ValidName(strings.ToLower(name)):
		return &NameError{name, "is not valid; use lower case: " + strings.ToLower(name)}
	case !ValidName(name):
		return &NameError{name, "is not valid; use only a-z, 0-9, _ and -"}
	}
	return nil
}

// ValidName reports whether CheckName accepts name.
func ValidName(name string) bool {
	if name == "" || len(name) > MaxNameLen {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// Fingerprint names what makes a credential the same one for the store:
// token URL, client id, grant, scopes (sorted, distinct) and subject. It is
// stable across scope order and holds no secret, so a changed secret keeps
// the stored token and a changed client starts afresh.
func Fingerprint(tokenURL, clientID string, grant sources.Grant, scopes []string, subject string) string {
	scopes = slices.Clone(scopes)
	slices.Sort(scopes)
	return url.Values{
		"token_url": {tokenURL},
		"client_id": {clientID},
		"grant":     {string(grant)},
		"scope":     {strings.Join(slices.Compact(scopes), " ")},
		"subject":   {subject},
	}.Encode()
}
