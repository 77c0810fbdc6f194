package main

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The systemd unit passes systemd's own verifier (with our binary in place
// of the installed path).
func TestSystemdUnitVerifies(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed; the unit is checked where systemd is")
	}
	unit, err := os.ReadFile("../../deploy/tokenbroker.service")
	if err != nil {
		t.Fatal(err)
	}
	text := strings.ReplaceAll(string(unit), "/usr/local/bin/tokenbroker", binary)
	text = strings.ReplaceAll(text, "EnvironmentFile=/etc/tokenbroker/tokenbroker.env", "EnvironmentFile=-/etc/tokenbroker/tokenbroker.env")
	p := filepath.Join(t.TempDir(), "tokenbroker.service")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(analyze, "verify", p).CombinedOutput(); err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// The example environment file is a valid configuration once its secret
// files exist.
func TestEnvExampleIsValid(t *testing.T) {
	f, err := os.Open("../../deploy/tokenbroker.env.example")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dir := t.TempDir()
	environ := []string{"TOKENBROKER_STATE_DIR=" + dir, "TOKENBROKER_SOCKET=" + filepath.Join(dir, "s.sock")}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("line %q is not NAME=value", line)
		}
		if isTokenFileVar(k) {
			v = filepath.Join(dir, "tokens", filepath.Base(v)) // written by the broker, not read
		} else if strings.HasSuffix(k, "_FILE") {
			v = filepath.Join(dir, filepath.Base(v))
			if err := os.WriteFile(v, []byte("example-secret\n"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		environ = append(environ, k+"="+v)
	}
	cfg, err := loadConfig(environ)
	if err != nil {
		t.Fatalf("deploy/tokenbroker.env.example is not a valid configuration:\n%v", err)
	}
	if len(cfg.Warnings) > 0 || len(cfg.Credentials) != 3 {
		t.Errorf("warnings %v, %d credentials; want none and 3", cfg.Warnings, len(cfg.Credentials))
	}
}
