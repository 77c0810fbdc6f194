package config

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
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
	case s.bad:
		s.given, s.failed = name, true // check reported it
	case s.set():
		s.given, s.from = name, name
	case path != "":
		v, err := ReadSecretFile(path)
		if err != nil {
			p.errorf(file, "%v", err)
		}
		s.V, s.given, s.failed = v, file, err != nil
		if err == nil {
			s.from = fmt.Sprintf("file %s (%s)", path, file)
		}
	}
}

// ok reports whether the secret was given and read.
func (s *Secret) ok() bool { return s.given != "" && !s.failed }

// ReadSecretFile reads a secret from a file that only its owner (and
// group) may read. Only the trailing line breaks are removed.
func ReadSecretFile(path string) (sources.Secret, error) {
	shown := sources.QuoteValue(path)
	if !filepath.IsAbs(path) {
		// Not echoed: a secret pasted here by mistake would land in the log.
		return sources.Secret{}, errors.New("is not an absolute path (value not shown, in case it is the secret itself); set the full path of a file holding the secret")
	}
	f, err := os.Open(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return sources.Secret{}, fmt.Errorf("%s does not exist; create it or fix the path", shown)
	case errors.Is(err, fs.ErrPermission):
		return sources.Secret{}, fmt.Errorf("%s cannot be read by this user (uid %d); give the broker's user read access (chown, chmod 600)", shown, os.Geteuid())
	case err != nil:
		return sources.Secret{}, fmt.Errorf("%s cannot be opened: %v; fix the path", shown, errors.Unwrap(err))
	}
	defer f.Close()
	if err := checkSecretFile(f, path); err != nil {
		return sources.Secret{}, err
	}
	b, err := io.ReadAll(io.LimitReader(f, maxSecretFile+1))
	s := strings.TrimRight(string(b), "\r\n")
	switch {
	case err != nil:
		return sources.Secret{}, fmt.Errorf("%s cannot be read: %v; fix the file", shown, errors.Unwrap(err))
	case len(b) > maxSecretFile:
		return sources.Secret{}, fmt.Errorf("%s is larger than %d KiB; point it at the file holding only the secret", shown, maxSecretFile>>10)
	case s == "":
		return sources.Secret{}, fmt.Errorf("%s is empty; write the secret into it", shown)
	case sources.HasControl(s):
		return sources.Secret{}, fmt.Errorf("%s holds more than one line or a control character; it must hold only the secret", shown)
	}
	return sources.NewSecret(s), nil
}

// checkSecretFile refuses anything but a regular file that other users
// cannot read or write. Group-readable is fine (a Kubernetes secret mounted
// with fsGroup is 0440).
func checkSecretFile(f *os.File, path string) error {
	st, err := f.Stat()
	switch {
	case err != nil:
		return fmt.Errorf("%s cannot be examined: %v; fix the path", sources.QuoteValue(path), errors.Unwrap(err))
	case !st.Mode().IsRegular():
		return fmt.Errorf("%s is not a regular file; point it at the file holding the secret", sources.QuoteValue(path))
	case st.Mode().Perm()&0o026 != 0:
		what := "readable by every user"
		if st.Mode().Perm()&0o004 == 0 {
			what = "writable by other users"
		}
		return fmt.Errorf("%s is %s (mode %04o); chmod 600 %s (or 640 to share it with a group)", sources.QuoteValue(path), what, st.Mode().Perm(), path)
	}
	return nil
}
