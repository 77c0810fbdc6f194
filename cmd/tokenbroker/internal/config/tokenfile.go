package config

import (
	"path/filepath"
	"syscall"

	"github.com/tokenbroker/tokenbroker/api/tokenfile"
	"github.com/tokenbroker/tokenbroker/sources"
)

// loadTokenFile reads the TOKEN_FILE settings. The directory is judged at
// start, by tokenfile.New: it may not exist yet.
func loadTokenFile(p *problems, c *cred, cc *Credential) {
	path := c.TokenFile.V
	if path == "" {
		for _, f := range []struct {
			field string
			set   bool
		}{{"TokenFileGroup", c.TokenFileGroup.set()}, {"TokenFileSignal", c.TokenFileSignal.set()}, {"TokenFilePidfile", c.TokenFilePidfile.set()}} {
			if f.set {
				p.warnf(c.v(f.field), "has no effect without %s; set it, or remove this", c.v("TokenFile"))
			}
		}
		return
	}
	if path != filepath.Clean(path) { // decode refused a relative one
		p.errorf(c.v("TokenFile"), "%s is not a clean path (no . or .. segment, no double or trailing slash); set one, e.g. /run/tokens/%s/token", sources.QuoteValue(path), c.name)
		return
	}
	f := tokenfile.File{Path: path, Format: tokenfile.Format(c.TokenFileFormat.V), Mode: c.TokenFileMode.V, GID: -1}
	switch m := f.Mode; {
	case c.TokenFileMode.err != nil: // reported by decode
	case m&^0o666 != 0 || m&0o022 != 0:
		p.errorf(c.v("TokenFileMode"), "%04o lets others write the token file or sets bits beyond read and write; use 0600, or 0640 with %s", m, c.v("TokenFileGroup"))
	case m&0o444 == 0:
		p.errorf(c.v("TokenFileMode"), "%04o lets nobody read the token file; use 0600, or 0640 with %s", m, c.v("TokenFileGroup"))
	case m&0o004 != 0:
		p.warnf(c.v("TokenFileMode"), "%04o lets every local user read the token; prefer 0640 with %s", m, c.v("TokenFileGroup"))
	}
	switch gids := c.TokenFileGroup.V; {
	case len(gids) > 1:
		p.errorf(c.v("TokenFileGroup"), "names %d groups; name one", len(gids))
	case len(gids) == 1 && gids[0] == 0:
		p.errorf(c.v("TokenFileGroup"), "is root's group; name the group whose members may read the token")
	case len(gids) == 1:
		f.GID = int(gids[0])
		if f.Mode&0o040 == 0 {
			p.warnf(c.v("TokenFileGroup"), "is set, but %s %04o gives the group no read access; use 0640", c.v("TokenFileMode"), f.Mode)
		}
	}
	sig, pidfile := c.TokenFileSignal.V, c.TokenFilePidfile.V
	switch {
	case sig != "" && pidfile == "":
		p.errorf(c.v("TokenFilePidfile"), "required with %s; set the path of the file holding the pid to signal", c.v("TokenFileSignal"))
	case sig == "" && pidfile != "":
		p.errorf(c.v("TokenFileSignal"), "required with %s; set HUP, USR1 or USR2", c.v("TokenFilePidfile"))
	case pidfile != "" && !filepath.IsAbs(pidfile):
		p.errorf(c.v("TokenFilePidfile"), "%s is not an absolute path; set one", sources.QuoteValue(pidfile))
	case sig != "":
		f.Signal = map[string]syscall.Signal{"HUP": syscall.SIGHUP, "USR1": syscall.SIGUSR1, "USR2": syscall.SIGUSR2}[sig]
		f.PIDFile = pidfile
	}
	cc.TokenFile = f
}

// checkTokenFiles refuses a token file that another credential's or the
// state directory's files would clash with.
func checkTokenFiles(p *problems, c Config) {
	owner := map[string]string{}
	for _, cc := range c.Credentials {
		path := cc.TokenFile.Path
		if path == "" {
			continue
		}
		name := CredentialPrefix(cc.Name) + "_TOKEN_FILE"
		switch {
		case owner[path] != "":
			p.errorf(name, "%s is also credential %s's token file; give each credential its own", sources.QuoteValue(path), owner[path])
		case filepath.Dir(path) == c.StateDir:
			p.errorf(name, "%s is in the state directory, which only the broker's own files may use; choose another directory", sources.QuoteValue(path))
		}
		owner[path] = cc.Name
	}
}
