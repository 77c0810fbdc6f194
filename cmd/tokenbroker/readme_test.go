package main

// The README's examples, run for real.
//
// Convention: a fenced code block in README.md is an example when the line
// right before its opening fence is
//
//	<!-- readme-example: ID -->
//
// (an HTML comment, invisible on GitHub). Each ID below names how the block
// is run and what its output must show; an ID the test does not know, a
// marker without a block, a missing ID, and a ```go or ```python block, or
// a shell block that asks the broker, left without a marker all fail, so a
// client example cannot slip into the README untested.
//
// The examples are written for a real host: they name the credential
// firework, the socket /run/tokenbroker/tokenbroker.sock or
// $TOKENBROKER_SOCKET, and the API https://api.firework.com. Before running
// one, the test substitutes the test broker's socket, a local API that
// accepts only bearer tokens the local provider issued and that are still
// valid (oauthtest Provider.Valid), and, for some, another credential of the
// demo configuration, so that the examples are seen to work for any name.
//
//	quickstart  sh -c; prints a valid token, and status shows it ok
//	curl        sh -c (needs curl); prints a handout whose token is valid
//	shell       sh -c (needs curl); the API got a valid token and answered
//	go          examples/go-client built with the README's code (go build
//	            -overlay), run; the API got a valid token and answered
//	python      python3 (skipped without it); the API got a valid token
//	proxy       sh -c (needs curl); the API, the upstream of firework, got a
//	            valid token through the proxy and answered
//	token-file  its TOKENBROKER_ lines configure the broker, with the file
//	            in a temporary directory; sh -c (needs curl); the API got a
//	            valid token from the file and answered
//	metrics     sh -c (needs curl); the metrics show the credential ok, and
//	            every tokenbroker_ metric served is named in the README

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/internal/tbtest"
	"github.com/tokenbroker/tokenbroker/sources/oauthtest"
)

// readmeExample is one marked code block of README.md.
type readmeExample struct {
	id, lang, code string
	line           int // of the opening fence
}

var readmeMarker = regexp.MustCompile(`^<!-- readme-example: ([a-z0-9-]+) -->$`)

// readmeExampleIDs are the examples the README must hold, in the order they
// run (quickstart fetches the firework token the metrics example counts).
var readmeExampleIDs = []string{"quickstart", "curl", "shell", "go", "python", "proxy", "token-file", "metrics"}

// What the examples name, which the test replaces.
const (
	readmeSocket     = "/run/tokenbroker/tokenbroker.sock"
	readmeAPIOrigin  = "https://api.firework.com"
	readmeAPIPath    = "/api/v1/videos/123"
	readmeCredential = "firework"
	readmeAPIAnswer  = `{"id":"123","title":"from the readme test"}`
	readmeTokenFiles = "/run/tokens" // the token-file example's directory
)

func readmeRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("module root %s: %v", root, err)
	}
	return root
}

// readmeExamples reads the marked blocks of README.md, by id, and checks the
// markers.
func readmeExamples(t *testing.T) map[string]readmeExample {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(readmeRoot(t), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	out := map[string]readmeExample{}
	for i := 0; i < len(lines); i++ {
		fence, ok := strings.CutPrefix(lines[i], "```")
		if !ok {
			if m := readmeMarker.FindStringSubmatch(lines[i]); m != nil {
				if i+1 >= len(lines) || !strings.HasPrefix(lines[i+1], "```") {
					t.Errorf("README.md:%d: marker %q is not right before a fenced code block", i+1, m[1])
				}
			} else if strings.Contains(lines[i], "readme-example") {
				t.Errorf("README.md:%d: %q is not a marker (<!-- readme-example: ID -->)", i+1, lines[i])
			}
			continue
		}
		start := i
		var code strings.Builder
		for i++; i < len(lines) && lines[i] != "```"; i++ {
			code.WriteString(lines[i] + "\n")
		}
		if i == len(lines) {
			t.Fatalf("README.md:%d: the code block is not closed", start+1)
		}
		lang := strings.TrimSpace(fence)
		var m []string
		if start > 0 {
			m = readmeMarker.FindStringSubmatch(lines[start-1])
		}
		if m == nil {
			asksBroker := strings.Contains(code.String(), "X-Tokenbroker") || strings.Contains(code.String(), "tokenbroker token")
			if lang == "go" || lang == "python" || (lang == "sh" && asksBroker) {
				t.Errorf("README.md:%d: a %s client example without a <!-- readme-example: ID --> marker, so no test runs it", start+1, lang)
			}
			continue
		}
		id := m[1]
		if !slices.Contains(readmeExampleIDs, id) {
			t.Errorf("README.md:%d: unknown example %q; the test runs %v", start+1, id, readmeExampleIDs)
			continue
		}
		if prev, dup := out[id]; dup {
			t.Errorf("README.md:%d: example %q is marked twice (also at line %d)", start+1, id, prev.line)
			continue
		}
		out[id] = readmeExample{id: id, lang: lang, code: code.String(), line: start + 1}
	}
	for _, id := range readmeExampleIDs {
		if _, ok := out[id]; !ok {
			t.Errorf("README.md has no example marked <!-- readme-example: %s -->", id)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	return out
}

// readmeAPI is an HTTP API that accepts only valid bearer tokens of p.
type readmeAPI struct {
	*httptest.Server
	mu                 sync.Mutex
	accepted, refused  int
	paths, authHeaders []string
}

func newReadmeAPI(t *testing.T, p *oauthtest.Provider) *readmeAPI {
	a := &readmeAPI{}
	a.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		valid := ok && p.Valid(tok)
		a.mu.Lock()
		a.paths = append(a.paths, r.URL.Path)
		if valid {
			a.accepted++
		} else {
			a.refused++
		}
		a.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		switch {
		case !valid:
			w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprintln(w, `{"error":"invalid_token"}`)
		case r.URL.Path != readmeAPIPath:
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprintln(w, `{"error":"not_found"}`)
		default:
			fmt.Fprint(w, readmeAPIAnswer)
		}
	}))
	t.Cleanup(a.Close)
	return a
}

// check fails unless a valid token reached the API, on the example's path,
// and no invalid one did.
func (a *readmeAPI) check(t *testing.T, out string) {
	t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.accepted == 0 || a.refused != 0 {
		t.Errorf("the API accepted %d requests and refused %d (no or an invalid bearer token); want at least one accepted, none refused\noutput:\n%s", a.accepted, a.refused, out)
	}
	for _, p := range a.paths {
		if p != readmeAPIPath {
			t.Errorf("the example called %s; want %s", p, readmeAPIPath)
		}
	}
	if !strings.Contains(out, readmeAPIAnswer) {
		t.Errorf("the output does not show the API's answer %s:\n%s", readmeAPIAnswer, out)
	}
}

// readmeEnv is the environment an example runs in: the test broker's
// socket, this test's tokenbroker first on PATH, and no proxy (the API is
// on 127.0.0.1).
func readmeEnv(sock string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(k, envPrefix), k == "PATH", strings.HasSuffix(strings.ToLower(k), "_proxy"):
			continue
		}
		env = append(env, kv)
	}
	return append(env, "TOKENBROKER_SOCKET="+sock, "PATH="+filepath.Dir(binary)+string(os.PathListSeparator)+os.Getenv("PATH"))
}

// readmeSubstitute puts the test's socket, API and credential name (unless "")
// into code, and fails when code does not name the API it must (it would
// then reach for the real one) or the credential.
func readmeSubstitute(t *testing.T, ex readmeExample, sock, api, name string, needAPI bool) string {
	t.Helper()
	code := ex.code
	if needAPI && !strings.Contains(code, readmeAPIOrigin+readmeAPIPath) {
		t.Fatalf("README.md:%d: the %s example must call %s, which the test replaces with its own API:\n%s", ex.line, ex.id, readmeAPIOrigin+readmeAPIPath, code)
	}
	code = strings.ReplaceAll(code, readmeAPIOrigin, api)
	code = strings.ReplaceAll(code, readmeSocket, sock)
	if name == "" {
		return code
	}
	if !strings.Contains(code, readmeCredential) {
		t.Fatalf("README.md:%d: the %s example does not name the credential %s", ex.line, ex.id, readmeCredential)
	}
	return strings.ReplaceAll(code, readmeCredential, name)
}

func readmeNeedTool(t *testing.T, name string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Skipf("%s is not installed: %v", name, err)
	}
}

// readmeRun runs a command with env and returns its standard output; it
// fails the test when the command fails. The bound is generous: building
// the Go example on a fresh CI machine compiles the standard library
// without -race, which took over a minute on a loaded 2-core VM.
func readmeRun(t *testing.T, env []string, dir string, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env, cmd.Dir = env, dir
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\nstdout:\n%s\nstderr:\n%s", name, strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// Every client example of the README runs against a real broker and an API
// that checks the token, and shows that a valid token got through.
func TestReadmeExamples(t *testing.T) {
	examples := readmeExamples(t)
	p, environ, sock := e2eSetup(t, oauthtest.Options{AccessLifetime: time.Hour, Rotate: true})
	proxied := newReadmeAPI(t, p)
	environ = append(environ, "TOKENBROKER_FIREWORK_UPSTREAM="+proxied.URL)
	tokenFiles := t.TempDir()
	tokenFileExample := strings.ReplaceAll(examples["token-file"].code, readmeTokenFiles, tokenFiles)
	environ = append(environ, regexp.MustCompile(`(?m)^TOKENBROKER_[A-Z_]+=\S+$`).FindAllString(tokenFileExample, -1)...)
	logs := &tbtest.SyncBuffer{}
	startDaemon(t, environ, sock, logs)
	env := readmeEnv(sock)
	root := readmeRoot(t)

	t.Run("quickstart", func(t *testing.T) {
		readmeNeedTool(t, "sh")
		out := readmeRun(t, env, t.TempDir(), "sh", "-c", readmeSubstitute(t, examples["quickstart"], sock, "", "firework", false))
		first, _, _ := strings.Cut(out, "\n")
		if !p.Valid(first) {
			t.Errorf("the first line is not a valid access token of firework:\n%s", out)
		}
		if !regexp.MustCompile(`(?m)^firework\s+firework\s+client_credentials\s+ok\s`).MatchString(out) {
			t.Errorf("tokenbroker status does not show firework ok:\n%s", out)
		}
	})

	t.Run("curl", func(t *testing.T) {
		readmeNeedTool(t, "curl")
		out := readmeRun(t, env, t.TempDir(), "sh", "-c", readmeSubstitute(t, examples["curl"], sock, "", "livepush", false))
		var h handout
		if err := json.Unmarshal([]byte(out), &h); err != nil {
			t.Fatalf("the output is not a handout: %v\n%s", err, out)
		}
		if !p.Valid(h.AccessToken) || h.TokenType != "Bearer" || h.ExpiresIn <= 0 {
			t.Errorf("handout: valid %v, token_type %q, expires_in %d (%s: %s); want a valid Bearer token with time left",
				p.Valid(h.AccessToken), h.TokenType, h.ExpiresIn, h.Error, h.Description)
		}
	})

	t.Run("shell", func(t *testing.T) {
		readmeNeedTool(t, "curl")
		api := newReadmeAPI(t, p)
		out := readmeRun(t, env, t.TempDir(), "sh", "-c", readmeSubstitute(t, examples["shell"], sock, api.URL, "ingest", true))
		api.check(t, out)
	})

	t.Run("go", func(t *testing.T) {
		goTool, err := exec.LookPath("go")
		if err != nil {
			t.Skipf("go is not installed: %v", err)
		}
		api := newReadmeAPI(t, p)
		dir := t.TempDir()
		// Build examples/go-client with the README's code in place of its
		// main.go, so that what runs is what the README shows.
		src := filepath.Join(dir, "main.go")
		if err := os.WriteFile(src, []byte(readmeSubstitute(t, examples["go"], sock, api.URL, "vsrs", true)), 0o600); err != nil {
			t.Fatal(err)
		}
		overlay, _ := json.Marshal(map[string]map[string]string{"Replace": {filepath.Join(root, "examples", "go-client", "main.go"): src}})
		overlayFile := filepath.Join(dir, "overlay.json")
		if err := os.WriteFile(overlayFile, overlay, 0o600); err != nil {
			t.Fatal(err)
		}
		exe := filepath.Join(dir, "go-client")
		readmeRun(t, os.Environ(), root, goTool, "build", "-overlay", overlayFile, "-o", exe, "./examples/go-client")
		out := readmeRun(t, env, dir, exe)
		api.check(t, out)
		if !strings.Contains(out, "token expires ") {
			t.Errorf("the Go example did not print the token's expiry:\n%s", out)
		}
	})

	t.Run("python", func(t *testing.T) {
		readmeNeedTool(t, "python3")
		api := newReadmeAPI(t, p)
		dir := t.TempDir()
		script := filepath.Join(dir, "call_api.py")
		if err := os.WriteFile(script, []byte(readmeSubstitute(t, examples["python"], sock, api.URL, "firework-user", true)), 0o600); err != nil {
			t.Fatal(err)
		}
		out := readmeRun(t, env, dir, "python3", script)
		api.check(t, out)
		if !strings.HasPrefix(out, "200 ") {
			t.Errorf("the Python example did not print the status 200 first:\n%s", out)
		}
	})

	t.Run("proxy", func(t *testing.T) {
		readmeNeedTool(t, "curl")
		ex := examples["proxy"]
		if !strings.Contains(ex.code, "TOKENBROKER_FIREWORK_UPSTREAM="+readmeAPIOrigin) || !strings.Contains(ex.code, "/v1/proxy/firework"+readmeAPIPath) {
			t.Fatalf("README.md:%d: the proxy example must name TOKENBROKER_FIREWORK_UPSTREAM=%s and call /v1/proxy/firework%s:\n%s", ex.line, readmeAPIOrigin, readmeAPIPath, ex.code)
		}
		out := readmeRun(t, env, t.TempDir(), "sh", "-c", readmeSubstitute(t, ex, sock, proxied.URL, "", false))
		proxied.check(t, out)
	})

	t.Run("token-file", func(t *testing.T) {
		readmeNeedTool(t, "curl")
		deadline := time.Now().Add(10 * time.Second)
		for n, _ := filepath.Glob(filepath.Join(tokenFiles, "*", "*")); len(n) == 0; n, _ = filepath.Glob(filepath.Join(tokenFiles, "*", "*")) {
			if time.Now().After(deadline) {
				t.Fatalf("the broker wrote no token file under %s\n%s", tokenFiles, logs)
			}
			time.Sleep(20 * time.Millisecond)
		}
		api := newReadmeAPI(t, p)
		ex := examples["token-file"]
		ex.code = tokenFileExample
		out := readmeRun(t, env, t.TempDir(), "sh", "-c", readmeSubstitute(t, ex, sock, api.URL, "", true))
		api.check(t, out)
	})

	t.Run("metrics", func(t *testing.T) {
		readmeNeedTool(t, "curl")
		if st, h, _ := get(t, httpOver(sock), "/v1/tokens/firework"); st != 200 {
			t.Fatalf("GET /v1/tokens/firework: %d %s", st, h.Description)
		}
		out := readmeRun(t, env, t.TempDir(), "sh", "-c", readmeSubstitute(t, examples["metrics"], sock, "", "", false))
		for _, want := range []string{
			`tokenbroker_credential_state{credential="firework",state="ok"} 1`,
			`tokenbroker_handouts_total{code="200",provider="firework"} `,
			`tokenbroker_token_expires_in_seconds{credential="firework"} `,
		} {
			if !strings.Contains(out, want) {
				t.Errorf("the metrics lack %s:\n%s", want, out)
			}
		}
		readme, err := os.ReadFile(filepath.Join(root, "README.md"))
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(strings.NewReader(out))
		seen := map[string]bool{}
		for sc.Scan() {
			name, _, _ := strings.Cut(sc.Text(), " ")
			name, _, _ = strings.Cut(name, "{")
			for _, sfx := range []string{"_bucket", "_sum", "_count"} {
				if base, ok := strings.CutSuffix(name, sfx); ok && strings.Contains(out, base+"_bucket") {
					name = base
				}
			}
			if !strings.HasPrefix(name, "tokenbroker_") {
				t.Errorf("the example printed a line that is not a tokenbroker_ metric: %q", sc.Text())
				continue
			}
			if !seen[name] && !strings.Contains(string(readme), "`"+name) {
				t.Errorf("the broker serves %s, which the README's Metrics section does not list", name)
			}
			seen[name] = true
		}
	})

	for _, s := range secrets(environ) {
		if s != "" && strings.Contains(logs.String(), s) {
			t.Errorf("the daemon's log holds a secret (%.6s…)", s)
		}
	}
}

// The README's Go and Python examples are the files under examples/, word
// for word, so that what a reader copies from either place is what runs.
func TestReadmeExampleFiles(t *testing.T) {
	examples := readmeExamples(t)
	root := readmeRoot(t)
	for id, file := range map[string]string{
		"go":     filepath.Join("examples", "go-client", "main.go"),
		"python": filepath.Join("examples", "python", "call_api.py"),
	} {
		b, err := os.ReadFile(filepath.Join(root, file))
		if err != nil {
			t.Fatal(err)
		}
		if got := examples[id].code; got != string(b) {
			t.Errorf("README.md:%d: the %s example differs from %s; keep them the same", examples[id].line, id, file)
		}
	}
}

// The README's variable tables and `tokenbroker help env`, which prints
// the settings structs' tags, name the same variables, and where the README
// gives a default in backquotes, the same default.
func TestReadmeConfigReference(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(readmeRoot(t), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	var out, errOut bytes.Buffer
	if code := run([]string{"help", "env"}, &out, &errOut); code != exitOK {
		t.Fatalf("help env: exit %d: %s", code, errOut.String())
	}
	usage := map[string]string{} // variable -> default
	for _, l := range strings.Split(out.String(), "\n") {
		if f := strings.Fields(l); len(f) > 3 && strings.HasPrefix(f[0], envPrefix) {
			usage[f[0]] = f[2]
		}
	}
	if len(usage) < 40 {
		t.Fatalf("help env lists %d variables:\n%s", len(usage), out.String())
	}
	const credPrefix = envPrefix + "<NAME>"
	for v, def := range usage {
		documented := "`" + v + "`"
		if s, ok := strings.CutPrefix(v, credPrefix); ok {
			documented = "`" + s + "`"
		}
		base, isFile := strings.CutSuffix(documented, fileSuffix+"`")
		switch {
		case isFile && strings.Contains(readme, base+"` (or `_FILE`)"), isFile && strings.Contains(readme, base+"`") && strings.Contains(readme, "may instead be given as\n`_FILE`"):
		case !strings.Contains(readme, documented):
			t.Errorf("README.md does not document %s (help env lists it)", v)
		}
		row := regexp.MustCompile("(?m)^\\| " + regexp.QuoteMeta(documented) + "[^|]* \\| `([^`]*)` \\|").FindStringSubmatch(readme)
		if row != nil && def != "-" && row[1] != def {
			t.Errorf("README.md gives %s the default %q; help env says %q", v, row[1], def)
		}
	}
	for _, m := range regexp.MustCompile("(?m)^\\| `(TOKENBROKER_[A-Z_]+)`").FindAllStringSubmatch(readme, -1) {
		if _, ok := usage[m[1]]; !ok {
			t.Errorf("README.md documents %s, which help env does not list", m[1])
		}
	}
}
