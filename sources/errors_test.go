package sources

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// A long error_description keeps the words that say what to change: it is
// cut, if at all, at a sentence or word boundary, and loses no control
// character filter on the way.
func TestCleanKeepsWholeWords(t *testing.T) {
	method := "This client is registered for client_secret_post; send client_id and client_secret in the body."
	long := strings.Repeat("The client authentication failed. ", 6) + method // ~300 bytes
	if got := clean(long); got != strings.TrimSpace(long) && got != long {
		t.Errorf("a 300-byte description was changed:\n got %q\nwant %q", got, long)
	}
	flood := strings.Repeat("word ", 400)
	got := clean(flood)
	if len(got) > descriptionMax+len(" …") || !strings.HasSuffix(got, " …") || strings.HasSuffix(strings.TrimSuffix(got, " …"), "wor") {
		t.Errorf("a flood was not bounded at a word: %d bytes, ends %q", len(got), got[max(0, len(got)-12):])
	}
	sentences := strings.Repeat("Use client_secret_post for this client. ", 30)
	if got := clean(sentences); !strings.HasSuffix(got, "client. …") {
		t.Errorf("cut not at a sentence end: ends %q", got[len(got)-20:])
	}
	if got := clean("x\nlevel=ERROR forged\x1b[31m"); strings.ContainsAny(got, "\n\x1b") {
		t.Errorf("control characters kept: %q", got)
	}
	if got := clean(strings.Repeat("é", 700)); !utf8.ValidString(got) || len(got) > descriptionMax+len("…") {
		t.Errorf("one long word: %d bytes, valid UTF-8 %t", len(got), utf8.ValidString(got))
	}
}

// invalid_client says which setting besides the secret can be wrong: the
// client authentication method.
func TestAdviceInvalidClientNamesClientAuth(t *testing.T) {
	a := Advice(&ProviderError{Grant: ClientCredentials, Status: 401, Code: "invalid_client"})
	if !strings.Contains(a, "_CLIENT_AUTH") || !strings.Contains(a, "client_secret_post") {
		t.Errorf("advice %q does not point at _CLIENT_AUTH", a)
	}
}
