package config

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/tokenbroker/tokenbroker/sources"
)

// maxSecretFile bounds a secret file: a key or a token, not a document.
const maxSecretFile = 64 << 10

// secret is one secret setting as read, from its variable or its _FILE.
type secret struct {
	value    sources.Secret
	set      bool   // read, or set and failed (then reported)
	failed   bool   // set, but a problem was reported
	from     string // for Credential.Sources: the variable, or the file and its variable
	variable string // the variable to blame
}

// readSecret reads a secret from the variable name (decoded as v) or the
// file its name_FILE names (path). It never puts the value in a message.
func readSecret(p *problems, name string, v *Secret, path string) secret {
	fileName := name + "_FILE"
	switch {
	case v.set() && path != "":
		p.errorf(name, "set together with %s; set only one", fileName)
		return secret{set: true, failed: true, variable: name}
	case v.bad:
		return secret{set: true, failed: true, variable: name} // decode reported it
	case v.set():
		return secret{value: v.V, set: true, from: name, variable: name}
	case path != "":
		s, err := ReadSecretFile(path)
		if err != nil {
			p.errorf(fileName, "%v", err)
			return secret{set: true, failed: true, variable: fileName}
		}
		return secret{value: s, set: true, from: fmt.Sprintf("file %s (%s)", path, fileName), variable: fileName}
	}
	return secret{}
}

// ReadSecretFile reads a secret from a file that only its owner (and
// group) may read. Only the trailing line breaks are removed.
func ReadSecretFile(path string) (sources.Secret, error) {
	shown := show(path)
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
	case hasControl(s):
		return sources.Secret{}, fmt.Errorf("%s holds more than one line or a control character; it must hold only the secret", shown)
	}
	return sources.NewSecret(s), nil
}

// checkSecretFile refuses anything but a regular file that other users
// cannot read or write. Group-readable is fine (a Kubernetes secret mounted
// with fsGroup is 0440).
func checkSecretFile(f *os.File, path string) error {
	shown := show(path)
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("%s cannot be examined: %v; fix the path", shown, errors.Unwrap(err))
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file; point it at the file holding the secret", shown)
	}
	if perm := st.Mode().Perm(); perm&0o026 != 0 {
		what := "readable by every user"
		if perm&0o004 == 0 {
			what = "writable by other users"
		}
		return fmt.Errorf("%s is %s (mode %04o); chmod 600 %s (or 640 to share it with a group)", shown, what, perm, path)
	}
	return nil
}
