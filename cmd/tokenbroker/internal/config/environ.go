package config

// Linux refuses an exec whose arguments and environment pass a quarter of
// the stack limit: 2 MiB with the usual 8 MiB. A restart, a systemd unit or
// a shell that runs the broker then fails with "argument list too long".
const (
	execLimit    = 2 << 20
	execWarnFrac = 0.75
)

// environSize is what the kernel counts for an environment: each string
// with its NUL, and a pointer to it.
func environSize(environ []string) int {
	n := 0
	for _, kv := range environ {
		n += len(kv) + 1 + 8
	}
	return n
}

// checkEnvironSize warns when the environment nears execLimit.
func checkEnvironSize(p *problems, environ []string) {
	n := environSize(environ)
	if float64(n) < execWarnFrac*execLimit {
		return
	}
	p.warnf(Prefix+"_CREDENTIALS", "the environment is %d KiB, %d%% of the %d KiB Linux allows an exec's environment and arguments, so a restart may fail with \"argument list too long\"; move secrets into files (TOKENBROKER_<NAME>_CLIENT_SECRET_FILE and the other _FILE settings), which shrinks each credential's share",
		n>>10, n*100/execLimit, execLimit>>10)
}
