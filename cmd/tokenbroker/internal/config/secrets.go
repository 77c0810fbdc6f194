package config

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"

	"github.com/tokenbroker/tokenbroker/sources"
)

// maxSecretFile bounds a secret file: a key or a token, not a document.
const maxSecretFile = 64 << 10

// Secret is a secret setting, from its variable or from the file its
// sibling field <Name>File names (decode calls read). Only trailing line
// breaks go (a secret pasted with its line break is common); it is never
// printed. V is zero when unset or when a problem was reported.
type Secret struct {
	V      sources.Secret
	bad    bool   // the variable holds a control character
	given  string // the variable to blame: set, or its _FILE set; "" if neither
	from   string // where V came from, for Credential.Sources
	failed bool   // given, but a problem was reported
}

func (s *Secret) Decode(v string) error {
	v = strings.TrimRight(v, "\r\n")
	*s = Secret{bad: sources.HasControl(v)}
	if v != "" && !s.bad {
		s.V = sources.NewSecret(v)
	}
	return nil
}

func (s *Secret) set() bool { return !s.V.IsZero() || s.bad }

func (s *Secret) check(reflect.StructTag) string {
	if s.bad {
		return "holds a line break, a control character or invalid UTF-8 (value not shown); fix it"
	}
	return ""
}

// read settles where the secret comes from: the variable name (decoded
// already) or the file at path, the value of name_FILE.
func (s *Secret) read(p *problems, name, path string) {
	file := name + "_FILE"
	switch {
	case s.set() && path != "":
		p.errorf(name, "set together with %s; set only one", file)
		s.V, s.given, s.failed = sources.Secret{}, name, true
	case s.set():
		s.given, s.from, s.failed = name, name, s.bad // check reported a bad one
	case path != "":
		v, err := ReadSecretFile(path)
		if s.V, s.given, s.failed = v, file, err != nil; err != nil {
			p.errorf(file, "%v", err)
		} else {
			s.from = fmt.Sprintf("file %s (%s)", path, file)
		}
	}
}

// ok reports whether the secret was given and read.
func (s *Secret) ok() bool { return s.given != "" && !s.failed }

// ReadSecretFile reads a secret from a regular file that other users may
// neither read nor write (group-readable is fine: a Kubernetes secret
// mounted with fsGroup is 0440). Only the trailing line breaks go.
func ReadSecretFile(path string) (sources.Secret, error) {
	if !filepath.IsAbs(path) { // not echoed: a secret pasted here by mistake would land in the log
		return sources.Secret{}, errors.New("is not an absolute path (value not shown, in case it is the secret itself); set the full path of a file holding the secret")
	}
	shown := sources.QuoteValue(path)
	f, err := os.Open(path)
	if err != nil {
		return sources.Secret{}, fileError(shown, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return sources.Secret{}, fileError(shown, err)
	}
	if mode := st.Mode(); !mode.IsRegular() {
		return sources.Secret{}, fmt.Errorf("%s is not a regular file; point it at the file holding the secret", shown)
	} else if mode&0o026 != 0 {
		what := map[bool]string{true: "readable by every user", false: "writable by other users"}[mode&0o004 != 0]
		return sources.Secret{}, fmt.Errorf("%s is %s (mode %04o); chmod 600 %s (or 640 to share it with a group)", shown, what, mode.Perm(), path)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxSecretFile+1))
	s := strings.TrimRight(string(b), "\r\n")
	switch {
	case err != nil:
		return sources.Secret{}, fileError(shown, err)
	case len(b) > maxSecretFile:
		return sources.Secret{}, fmt.Errorf("%s is larger than %d KiB; point it at the file holding only the secret", shown, maxSecretFile>>10)
	case s == "":
		return sources.Secret{}, fmt.Errorf("%s is empty; write the secret into it", shown)
	case sources.HasControl(s):
		return sources.Secret{}, fmt.Errorf("%s holds more than one line or a control character; it must hold only the secret", shown)
	}
	return sources.NewSecret(s), nil
}

// fileError says why the file at shown could not be read, and what to do.
func fileError(shown string, err error) error {
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("%s does not exist; create it or fix the path", shown)
	case errors.Is(err, os.ErrPermission):
		return fmt.Errorf("%s cannot be read by this user (uid %d); give the broker's user read access (chown, chmod 600)", shown, os.Geteuid())
	}
	return fmt.Errorf("%s cannot be read: %v; fix the path", shown, errors.Unwrap(err))
}
