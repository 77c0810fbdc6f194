package main

// The Kubernetes and docker compose manifests under deploy/, checked at
// schema level: each document is decoded strictly into small structs that
// model exactly the fields the manifests use (a misspelled or misplaced field
// fails), every reference (volume, Secret key, ConfigMap, Service selector,
// depends_on, named volume, secret file) must resolve, the socket must be
// shared the way the client expects, and each broker's environment must pass
// the real configuration loader, as the broker would read it at start.
// Where kubectl has a cluster, or docker compose is installed, their own
// validators run too.

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"maps"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/tokenbroker/tokenbroker/cmd/tokenbroker/internal/config"
)

const (
	kubeManifestPath    = "../../deploy/kubernetes/tokenbroker.yaml"
	kubeSidecarPath     = "../../deploy/kubernetes/token-file-sidecar.yaml"
	composeManifestPath = "../../deploy/compose.yaml"
	dockerfilePath      = "../../Dockerfile"
	brokerImage         = "tokenbroker:latest"
)

// decodeStrict decodes one YAML document into out, refusing fields out does
// not model.
func decodeStrict(doc []byte, out any) error {
	dec := yaml.NewDecoder(bytes.NewReader(doc))
	dec.KnownFields(true)
	return dec.Decode(out)
}

// pathUnder reports whether p is dir or inside it, and p relative to dir.
func pathUnder(p, dir string) (string, bool) {
	p, dir = path.Clean(p), path.Clean(dir)
	if p == dir {
		return ".", true
	}
	if rest, ok := strings.CutPrefix(p, strings.TrimSuffix(dir, "/")+"/"); ok {
		return rest, true
	}
	return "", false
}

// dockerfileFacts is what the manifests must agree with in the Dockerfile:
// the binary's path (ENTRYPOINT) and the user it runs as (USER uid:gid).
type dockerfileFacts struct {
	entrypoint string
	uid, gid   int64
}

func readDockerfile(t *testing.T) dockerfileFacts {
	t.Helper()
	b, err := os.ReadFile(dockerfilePath)
	if err != nil {
		t.Fatal(err)
	}
	var f dockerfileFacts
	f.uid, f.gid = -1, -1
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if rest, ok := strings.CutPrefix(line, "ENTRYPOINT "); ok {
			var argv []string
			if err := json.Unmarshal([]byte(rest), &argv); err != nil || len(argv) != 1 {
				t.Fatalf("Dockerfile: ENTRYPOINT %s is not the one-element exec form this test expects", rest)
			}
			f.entrypoint = argv[0]
		}
		if rest, ok := strings.CutPrefix(line, "USER "); ok {
			u, g, _ := strings.Cut(strings.TrimSpace(rest), ":")
			uid, err1 := strconv.ParseInt(u, 10, 64)
			gid, err2 := strconv.ParseInt(g, 10, 64)
			if err1 != nil || err2 != nil {
				t.Fatalf("Dockerfile: USER %s is not the numeric uid:gid this test expects", rest)
			}
			f.uid, f.gid = uid, gid
		}
	}
	if f.entrypoint == "" || f.uid < 0 {
		t.Fatalf("Dockerfile: no ENTRYPOINT or USER found (%+v)", f)
	}
	return f
}

// isSubcommand reports whether tokenbroker has the subcommand, per its usage.
func isSubcommand(s string) bool {
	return s != "" && strings.Contains(usage, "\n  tokenbroker "+s+" ")
}

// plaintextSecretSuffixes name settings that hold a secret; manifests must
// give them as _FILE.
var plaintextSecretSuffixes = []string{
	"_" + sfxClientSecret, "_" + sfxPreviousSecret, "_" + sfxRefreshToken, "_" + sfxPassword,
	"_" + varEncryptionKey, "_" + varRedisPassword,
}

// checkBrokerEnv runs a broker's environment through loadConfig, as
// TestEnvExampleIsValid does: every _FILE variable points at a temporary file
// holding a fake value, the socket and the state directory are moved under a
// temporary directory. It wants no error, no warning (an unknown TOKENBROKER_
// variable is one) and every listed credential configured.
func checkBrokerEnv(t *testing.T, what string, env map[string]string) Config {
	t.Helper()
	dir := t.TempDir()
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var environ []string
	for _, k := range keys {
		v := env[k]
		if strings.HasPrefix(k, envPrefix) {
			for _, s := range plaintextSecretSuffixes {
				if strings.HasSuffix(k, s) {
					t.Errorf("%s: %s holds a secret in the manifest itself; mount it as a file and set %s%s", what, k, k, fileSuffix)
				}
			}
		}
		switch {
		case k == envPrefix+varSocket:
			if !path.IsAbs(v) || len(v) > maxSocketPathLen {
				t.Errorf("%s: %s=%q is not an absolute path of at most %d bytes", what, k, v, maxSocketPathLen)
			}
			v = filepath.Join(dir, path.Base(v))
		case k == envPrefix+varStateDir:
			if !path.IsAbs(v) {
				t.Errorf("%s: %s=%q is not an absolute path", what, k, v)
			}
			v = filepath.Join(dir, "state")
		case k == envPrefix+varRedisCAFile:
			t.Errorf("%s: %s: this test cannot fake a CA bundle yet; teach it to", what, k)
			continue
		case isTokenFileVar(k): // written by the broker, not a secret it reads
			if !path.IsAbs(v) {
				t.Errorf("%s: %s=%q is not an absolute path", what, k, v)
			}
			v = filepath.Join(dir, "tokens", path.Base(v))
		case strings.HasPrefix(k, envPrefix) && strings.HasSuffix(k, fileSuffix):
			if !path.IsAbs(v) {
				t.Errorf("%s: %s=%q is not an absolute path", what, k, v)
			}
			fake := "example-secret\n"
			if k == envPrefix+varEncryptionKey+fileSuffix {
				fake = "k1:" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32)) + "\n"
			}
			v = filepath.Join(dir, k)
			if err := os.WriteFile(v, []byte(fake), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		environ = append(environ, k+"="+v)
	}
	cfg, err := loadConfig(environ)
	if err != nil {
		t.Errorf("%s: the broker's environment is not a valid configuration:\n%v", what, err)
	}
	if len(cfg.Warnings) > 0 {
		t.Errorf("%s: the broker's environment draws warnings:\n%s", what, strings.Join(cfg.Warnings, "\n"))
	}
	if n := len(strings.Split(env[envPrefix+varCredentials], ",")); err == nil && len(cfg.Credentials) != n {
		t.Errorf("%s: %d credentials configured, %d listed", what, len(cfg.Credentials), n)
	}
	return cfg
}

// checkCurlClient checks a client's curl command line: it asks over the
// socket at sock, with the X-Tokenbroker header, for a configured credential.
func checkCurlClient(t *testing.T, what string, argv []string, sock string, cfg Config) {
	t.Helper()
	if i := slices.Index(argv, "--unix-socket"); i < 0 || i+1 >= len(argv) || argv[i+1] != sock {
		t.Errorf("%s: %q does not pass --unix-socket %s", what, argv, sock)
	}
	header := false
	for i := range argv {
		if (argv[i] == "-H" || argv[i] == "--header") && i+1 < len(argv) && argv[i+1] == "X-Tokenbroker: 1" {
			header = true
		}
	}
	if !header {
		t.Errorf("%s: %q does not send -H 'X-Tokenbroker: 1'", what, argv)
	}
	var names []string
	for _, c := range cfg.Credentials {
		names = append(names, c.Name)
	}
	u := argv[len(argv)-1]
	name, ok := strings.CutPrefix(u, "http://tokenbroker/v1/tokens/")
	if !ok || !slices.Contains(names, name) {
		t.Errorf("%s: the last argument %q is not http://tokenbroker/v1/tokens/NAME for a configured credential (%v)", what, u, names)
	}
}

// ---- Kubernetes ----

type kubeMeta struct {
	Name   string            `yaml:"name"`
	Labels map[string]string `yaml:"labels"`
}

// kubeHeader is read loosely first, to pick the document's type.
type kubeHeader struct {
	APIVersion string   `yaml:"apiVersion"`
	Kind       string   `yaml:"kind"`
	Metadata   kubeMeta `yaml:"metadata"`
}

type kubeSecret struct {
	APIVersion string            `yaml:"apiVersion"`
	Kind       string            `yaml:"kind"`
	Metadata   kubeMeta          `yaml:"metadata"`
	Type       string            `yaml:"type"`
	StringData map[string]string `yaml:"stringData"`
	Data       map[string]string `yaml:"data"`
}

func (s kubeSecret) hasKey(k string) bool {
	_, a := s.StringData[k]
	_, b := s.Data[k]
	return a || b
}

type kubeConfigMap struct {
	APIVersion string            `yaml:"apiVersion"`
	Kind       string            `yaml:"kind"`
	Metadata   kubeMeta          `yaml:"metadata"`
	Data       map[string]string `yaml:"data"`
}

type kubeService struct {
	APIVersion string   `yaml:"apiVersion"`
	Kind       string   `yaml:"kind"`
	Metadata   kubeMeta `yaml:"metadata"`
	Spec       struct {
		Selector map[string]string `yaml:"selector"`
		Ports    []kubeServicePort `yaml:"ports"`
	} `yaml:"spec"`
}

type kubeServicePort struct {
	Name       string `yaml:"name"`
	Port       int    `yaml:"port"`
	TargetPort string `yaml:"targetPort"` // a number or a port's name
}

// kubeWorkload is a DaemonSet or a Deployment.
type kubeWorkload struct {
	APIVersion string   `yaml:"apiVersion"`
	Kind       string   `yaml:"kind"`
	Metadata   kubeMeta `yaml:"metadata"`
	Spec       struct {
		Replicas *int `yaml:"replicas"` // Deployment
		Selector struct {
			MatchLabels map[string]string `yaml:"matchLabels"`
		} `yaml:"selector"`
		UpdateStrategy *struct { // DaemonSet
			Type          string `yaml:"type"`
			RollingUpdate *struct {
				MaxUnavailable string `yaml:"maxUnavailable"`
				MaxSurge       string `yaml:"maxSurge"`
			} `yaml:"rollingUpdate"`
		} `yaml:"updateStrategy"`
		Template struct {
			Metadata kubeMeta    `yaml:"metadata"`
			Spec     kubePodSpec `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

type kubePod struct {
	APIVersion string      `yaml:"apiVersion"`
	Kind       string      `yaml:"kind"`
	Metadata   kubeMeta    `yaml:"metadata"`
	Spec       kubePodSpec `yaml:"spec"`
}

type kubePodSpec struct {
	RestartPolicy                string                  `yaml:"restartPolicy"`
	AutomountServiceAccountToken *bool                   `yaml:"automountServiceAccountToken"`
	EnableServiceLinks           *bool                   `yaml:"enableServiceLinks"`
	SecurityContext              *kubePodSecurityContext `yaml:"securityContext"`
	InitContainers               []kubeContainer         `yaml:"initContainers"`
	Containers                   []kubeContainer         `yaml:"containers"`
	Volumes                      []kubeVolume            `yaml:"volumes"`
}

type kubePodSecurityContext struct {
	RunAsNonRoot       *bool   `yaml:"runAsNonRoot"`
	RunAsUser          *int64  `yaml:"runAsUser"`
	RunAsGroup         *int64  `yaml:"runAsGroup"`
	FSGroup            *int64  `yaml:"fsGroup"`
	SupplementalGroups []int64 `yaml:"supplementalGroups"`
	SeccompProfile     *struct {
		Type string `yaml:"type"`
	} `yaml:"seccompProfile"`
}

type kubeContainer struct {
	Name            string   `yaml:"name"`
	Image           string   `yaml:"image"`
	ImagePullPolicy string   `yaml:"imagePullPolicy"`
	Command         []string `yaml:"command"`
	Args            []string `yaml:"args"`
	Env             []struct {
		Name      string `yaml:"name"`
		Value     string `yaml:"value"`
		ValueFrom *struct {
			SecretKeyRef    *kubeKeyRef `yaml:"secretKeyRef"`
			ConfigMapKeyRef *kubeKeyRef `yaml:"configMapKeyRef"`
		} `yaml:"valueFrom"`
	} `yaml:"env"`
	EnvFrom []struct {
		ConfigMapRef *struct {
			Name string `yaml:"name"`
		} `yaml:"configMapRef"`
		SecretRef *struct {
			Name string `yaml:"name"`
		} `yaml:"secretRef"`
	} `yaml:"envFrom"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	SecurityContext *struct {
		RunAsNonRoot             *bool  `yaml:"runAsNonRoot"`
		RunAsUser                *int64 `yaml:"runAsUser"`
		RunAsGroup               *int64 `yaml:"runAsGroup"`
		ReadOnlyRootFilesystem   *bool  `yaml:"readOnlyRootFilesystem"`
		AllowPrivilegeEscalation *bool  `yaml:"allowPrivilegeEscalation"`
		Capabilities             *struct {
			Drop []string `yaml:"drop"`
			Add  []string `yaml:"add"`
		} `yaml:"capabilities"`
	} `yaml:"securityContext"`
	Resources struct {
		Requests map[string]string `yaml:"requests"`
		Limits   map[string]string `yaml:"limits"`
	} `yaml:"resources"`
	StartupProbe   *kubeProbe `yaml:"startupProbe"`
	ReadinessProbe *kubeProbe `yaml:"readinessProbe"`
	LivenessProbe  *kubeProbe `yaml:"livenessProbe"`
	VolumeMounts   []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
		ReadOnly  bool   `yaml:"readOnly"`
	} `yaml:"volumeMounts"`
}

type kubeKeyRef struct {
	Name string `yaml:"name"`
	Key  string `yaml:"key"`
}

type kubeProbe struct {
	Exec *struct {
		Command []string `yaml:"command"`
	} `yaml:"exec"`
	InitialDelaySeconds int `yaml:"initialDelaySeconds"`
	PeriodSeconds       int `yaml:"periodSeconds"`
	TimeoutSeconds      int `yaml:"timeoutSeconds"`
	FailureThreshold    int `yaml:"failureThreshold"`
}

type kubeVolume struct {
	Name     string `yaml:"name"`
	HostPath *struct {
		Path string `yaml:"path"`
		Type string `yaml:"type"`
	} `yaml:"hostPath"`
	EmptyDir *struct {
		Medium    string `yaml:"medium"`
		SizeLimit string `yaml:"sizeLimit"`
	} `yaml:"emptyDir"`
	Secret *struct {
		SecretName  string `yaml:"secretName"`
		DefaultMode *int   `yaml:"defaultMode"`
		Items       []struct {
			Key  string `yaml:"key"`
			Path string `yaml:"path"`
		} `yaml:"items"`
	} `yaml:"secret"`
	ConfigMap *struct {
		Name string `yaml:"name"`
	} `yaml:"configMap"`
}

// kubePodOf is a pod spec with where it comes from.
type kubePodOf struct {
	what   string // "DaemonSet tokenbroker"
	labels map[string]string
	spec   *kubePodSpec
}

type kubeManifest struct {
	secrets    map[string]kubeSecret
	configMaps map[string]kubeConfigMap
	services   map[string]kubeService
	workloads  map[string]kubeWorkload // by "Kind/name"
	pods       map[string]kubePod
}

// allPods lists every pod spec: the workloads' templates and the Pods.
func (m *kubeManifest) allPods() []kubePodOf {
	var out []kubePodOf
	for _, k := range slices.Sorted(maps.Keys(m.workloads)) {
		w := m.workloads[k]
		out = append(out, kubePodOf{w.Kind + " " + w.Metadata.Name, w.Spec.Template.Metadata.Labels, &w.Spec.Template.Spec})
	}
	for _, k := range slices.Sorted(maps.Keys(m.pods)) {
		p := m.pods[k]
		out = append(out, kubePodOf{"Pod " + k, p.Metadata.Labels, &p.Spec})
	}
	return out
}

var kubeAPIVersions = map[string]string{
	"Secret": "v1", "ConfigMap": "v1", "Service": "v1", "Pod": "v1",
	"DaemonSet": "apps/v1", "Deployment": "apps/v1",
}

// kubeManifestPaths are the files checked together: names must not clash
// between them.
var kubeManifestPaths = []string{kubeManifestPath, kubeSidecarPath}

// readKubeManifest splits the files on "---" lines, as kubectl does, and
// decodes each document strictly into the type its kind names.
func readKubeManifest(t *testing.T) *kubeManifest {
	t.Helper()
	m := &kubeManifest{
		secrets: map[string]kubeSecret{}, configMaps: map[string]kubeConfigMap{}, services: map[string]kubeService{},
		workloads: map[string]kubeWorkload{}, pods: map[string]kubePod{},
	}
	for _, p := range kubeManifestPaths {
		readKubeManifestFile(t, m, p)
	}
	return m
}

func readKubeManifestFile(t *testing.T, m *kubeManifest, kubeManifestPath string) {
	t.Helper()
	b, err := os.ReadFile(kubeManifestPath)
	if err != nil {
		t.Fatal(err)
	}
	var docs [][]byte
	var starts []int
	cur, start := []string{}, 1
	lines := strings.Split(string(b), "\n")
	for i, line := range lines {
		if strings.TrimRight(line, " \t") == "---" {
			docs, starts = append(docs, []byte(strings.Join(cur, "\n"))), append(starts, start)
			cur, start = nil, i+2
			continue
		}
		cur = append(cur, line)
	}
	docs, starts = append(docs, []byte(strings.Join(cur, "\n"))), append(starts, start)
	for i, doc := range docs {
		where := fmt.Sprintf("%s, document at line %d", kubeManifestPath, starts[i])
		var n yaml.Node
		if err := yaml.Unmarshal(doc, &n); err != nil {
			t.Fatalf("%s: %v", where, err)
		}
		if len(n.Content) == 0 {
			continue // comments only
		}
		var h kubeHeader
		if err := n.Decode(&h); err != nil {
			t.Fatalf("%s: %v", where, err)
		}
		if h.APIVersion == "" || h.Kind == "" || h.Metadata.Name == "" {
			t.Fatalf("%s: apiVersion %q, kind %q, metadata.name %q: all three are required", where, h.APIVersion, h.Kind, h.Metadata.Name)
		}
		want, known := kubeAPIVersions[h.Kind]
		if !known {
			t.Fatalf("%s: kind %s is not one this test models; teach it", where, h.Kind)
		}
		if h.APIVersion != want {
			t.Errorf("%s: %s %s has apiVersion %s; want %s", where, h.Kind, h.Metadata.Name, h.APIVersion, want)
		}
		where += " (" + h.Kind + " " + h.Metadata.Name + ")"
		dup := func(exists bool) {
			if exists {
				t.Errorf("%s: a second %s named %s", where, h.Kind, h.Metadata.Name)
			}
		}
		switch h.Kind {
		case "Secret":
			var s kubeSecret
			err = decodeStrict(doc, &s)
			_, exists := m.secrets[h.Metadata.Name]
			dup(exists)
			m.secrets[h.Metadata.Name] = s
		case "ConfigMap":
			var c kubeConfigMap
			err = decodeStrict(doc, &c)
			_, exists := m.configMaps[h.Metadata.Name]
			dup(exists)
			m.configMaps[h.Metadata.Name] = c
		case "Service":
			var s kubeService
			err = decodeStrict(doc, &s)
			_, exists := m.services[h.Metadata.Name]
			dup(exists)
			m.services[h.Metadata.Name] = s
		case "DaemonSet", "Deployment":
			var w kubeWorkload
			err = decodeStrict(doc, &w)
			key := h.Kind + "/" + h.Metadata.Name
			_, exists := m.workloads[key]
			dup(exists)
			m.workloads[key] = w
		case "Pod":
			var p kubePod
			err = decodeStrict(doc, &p)
			_, exists := m.pods[h.Metadata.Name]
			dup(exists)
			m.pods[h.Metadata.Name] = p
		}
		if err != nil {
			t.Fatalf("%s: %v", where, err)
		}
	}
}

// The file parses strictly and holds what the deployment needs.
func TestKubeManifestSchema(t *testing.T) {
	m := readKubeManifest(t)
	for _, want := range []string{"DaemonSet/tokenbroker", "Deployment/tokenbroker-redis"} {
		if _, ok := m.workloads[want]; !ok {
			t.Errorf("no %s", want)
		}
	}
	if _, ok := m.services["tokenbroker-redis"]; !ok {
		t.Error("no Service tokenbroker-redis")
	}
	if len(m.secrets) == 0 || len(m.pods) == 0 {
		t.Errorf("%d Secrets, %d Pods; want the placeholder Secret and the example client", len(m.secrets), len(m.pods))
	}
	for k, w := range m.workloads {
		sel := w.Spec.Selector.MatchLabels
		if len(sel) == 0 {
			t.Errorf("%s: spec.selector.matchLabels is empty", k)
		}
		for lk, lv := range sel {
			if got, ok := w.Spec.Template.Metadata.Labels[lk]; !ok || got != lv {
				t.Errorf("%s: selector %s=%s is not among the template's labels %v", k, lk, lv, w.Spec.Template.Metadata.Labels)
			}
		}
		if w.Kind == "DaemonSet" && w.Spec.Replicas != nil {
			t.Errorf("%s: a DaemonSet has no replicas", k)
		}
		if w.Kind == "Deployment" && w.Spec.UpdateStrategy != nil {
			t.Errorf("%s: a Deployment's field is strategy, not updateStrategy", k)
		}
	}
	for name, s := range m.secrets {
		if len(s.StringData)+len(s.Data) == 0 {
			t.Errorf("Secret %s holds no key", name)
		}
	}
}

// Every name a pod uses resolves: volumes, Secrets and their keys,
// ConfigMaps; the Service selects the Redis pods and names their port.
func TestKubeManifestReferences(t *testing.T) {
	m := readKubeManifest(t)
	for _, p := range m.allPods() {
		vols := map[string]kubeVolume{}
		for _, v := range p.spec.Volumes {
			if _, dup := vols[v.Name]; dup {
				t.Errorf("%s: volume %s declared twice", p.what, v.Name)
			}
			vols[v.Name] = v
			kinds := 0
			for _, set := range []bool{v.HostPath != nil, v.EmptyDir != nil, v.Secret != nil, v.ConfigMap != nil} {
				if set {
					kinds++
				}
			}
			if kinds != 1 {
				t.Errorf("%s: volume %s has %d sources; want one", p.what, v.Name, kinds)
			}
			if v.HostPath != nil && (!path.IsAbs(v.HostPath.Path) || !slices.Contains([]string{"Directory", "DirectoryOrCreate"}, v.HostPath.Type)) {
				t.Errorf("%s: hostPath volume %s: path %q type %q; want an absolute directory", p.what, v.Name, v.HostPath.Path, v.HostPath.Type)
			}
			if v.Secret != nil {
				s, ok := m.secrets[v.Secret.SecretName]
				if !ok {
					t.Errorf("%s: volume %s names Secret %q, which the file does not declare", p.what, v.Name, v.Secret.SecretName)
				}
				for _, it := range v.Secret.Items {
					if !s.hasKey(it.Key) {
						t.Errorf("%s: volume %s maps key %q, which Secret %s lacks", p.what, v.Name, it.Key, v.Secret.SecretName)
					}
				}
			}
			if v.ConfigMap != nil {
				if _, ok := m.configMaps[v.ConfigMap.Name]; !ok {
					t.Errorf("%s: volume %s names ConfigMap %q, which the file does not declare", p.what, v.Name, v.ConfigMap.Name)
				}
			}
		}
		used := map[string]bool{}
		names := map[string]bool{}
		for _, c := range slices.Concat(p.spec.InitContainers, p.spec.Containers) {
			if c.Name == "" || names[c.Name] {
				t.Errorf("%s: container name %q is empty or repeated", p.what, c.Name)
			}
			names[c.Name] = true
			if c.Image == "" {
				t.Errorf("%s: container %s has no image", p.what, c.Name)
			}
			mounts := map[string]bool{}
			for _, vm := range c.VolumeMounts {
				if _, ok := vols[vm.Name]; !ok {
					t.Errorf("%s: container %s mounts volume %q, which the pod does not declare", p.what, c.Name, vm.Name)
				}
				if !path.IsAbs(vm.MountPath) || mounts[vm.MountPath] {
					t.Errorf("%s: container %s: mountPath %q is relative or repeated", p.what, c.Name, vm.MountPath)
				}
				mounts[vm.MountPath] = true
				used[vm.Name] = true
			}
			for _, e := range c.Env {
				if e.ValueFrom == nil {
					continue
				}
				if r := e.ValueFrom.SecretKeyRef; r != nil {
					if s, ok := m.secrets[r.Name]; !ok || !s.hasKey(r.Key) {
						t.Errorf("%s: container %s: %s reads key %q of Secret %q, which the file does not declare", p.what, c.Name, e.Name, r.Key, r.Name)
					}
				}
				if r := e.ValueFrom.ConfigMapKeyRef; r != nil {
					if cm, ok := m.configMaps[r.Name]; !ok || cm.Data[r.Key] == "" {
						t.Errorf("%s: container %s: %s reads key %q of ConfigMap %q, which the file does not declare", p.what, c.Name, e.Name, r.Key, r.Name)
					}
				}
			}
			for _, ef := range c.EnvFrom {
				if ef.ConfigMapRef != nil {
					if _, ok := m.configMaps[ef.ConfigMapRef.Name]; !ok {
						t.Errorf("%s: container %s: envFrom ConfigMap %q is not declared", p.what, c.Name, ef.ConfigMapRef.Name)
					}
				}
				if ef.SecretRef != nil {
					if _, ok := m.secrets[ef.SecretRef.Name]; !ok {
						t.Errorf("%s: container %s: envFrom Secret %q is not declared", p.what, c.Name, ef.SecretRef.Name)
					}
				}
			}
			for _, pr := range []*kubeProbe{c.StartupProbe, c.ReadinessProbe, c.LivenessProbe} {
				if pr != nil && (pr.Exec == nil || len(pr.Exec.Command) == 0) {
					t.Errorf("%s: container %s has a probe without an exec command", p.what, c.Name)
				}
			}
		}
		for name := range vols {
			if !used[name] {
				t.Errorf("%s: volume %s is declared but no container mounts it", p.what, name)
			}
		}
	}

	// Each Service selects exactly one workload and names one of its ports.
	for name, s := range m.services {
		if len(s.Spec.Selector) == 0 || len(s.Spec.Ports) == 0 {
			t.Errorf("Service %s: no selector or no ports", name)
			continue
		}
		var matched []kubePodOf
		for _, p := range m.allPods() {
			all := true
			for k, v := range s.Spec.Selector {
				if p.labels[k] != v {
					all = false
				}
			}
			if all {
				matched = append(matched, p)
			}
		}
		if len(matched) != 1 {
			t.Errorf("Service %s: selector %v matches %d pod templates; want one", name, s.Spec.Selector, len(matched))
			continue
		}
		for _, sp := range s.Spec.Ports {
			found := false
			for _, c := range matched[0].spec.Containers {
				for _, cp := range c.Ports {
					if sp.TargetPort == cp.Name || sp.TargetPort == strconv.Itoa(cp.ContainerPort) || sp.TargetPort == "" && sp.Port == cp.ContainerPort {
						found = true
					}
				}
			}
			if !found {
				t.Errorf("Service %s: port %d targets %q, which %s does not expose", name, sp.Port, sp.TargetPort, matched[0].what)
			}
		}
	}
	if w, ok := m.workloads["Deployment/tokenbroker-redis"]; ok {
		if s := m.services["tokenbroker-redis"]; len(s.Spec.Selector) > 0 {
			for k, v := range s.Spec.Selector {
				if w.Spec.Template.Metadata.Labels[k] != v {
					t.Errorf("Service tokenbroker-redis selects %s=%s; the Redis Deployment's pods are labelled %v", k, v, w.Spec.Template.Metadata.Labels)
				}
			}
		}
	}
}

// Every container is locked down and sized; only an init container may run
// as root, and then only to hand directories to the broker's user.
func TestKubeManifestSecurity(t *testing.T) {
	m := readKubeManifest(t)
	for _, p := range m.allPods() {
		if p.spec.AutomountServiceAccountToken == nil || *p.spec.AutomountServiceAccountToken {
			t.Errorf("%s: automountServiceAccountToken is not false; nothing here talks to the API server", p.what)
		}
		podNonRoot := p.spec.SecurityContext != nil && p.spec.SecurityContext.RunAsNonRoot != nil && *p.spec.SecurityContext.RunAsNonRoot
		for i, c := range slices.Concat(p.spec.InitContainers, p.spec.Containers) {
			init := i < len(p.spec.InitContainers)
			what := fmt.Sprintf("%s, container %s", p.what, c.Name)
			for _, r := range []string{"cpu", "memory"} {
				if c.Resources.Requests[r] == "" || c.Resources.Limits[r] == "" {
					t.Errorf("%s: resources: want requests and limits for %s, got %v and %v", what, r, c.Resources.Requests, c.Resources.Limits)
				}
			}
			sc := c.SecurityContext
			if sc == nil {
				t.Errorf("%s: no securityContext", what)
				continue
			}
			if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
				t.Errorf("%s: allowPrivilegeEscalation is not false", what)
			}
			if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
				t.Errorf("%s: readOnlyRootFilesystem is not true", what)
			}
			if sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []string{"ALL"}) {
				t.Errorf("%s: capabilities do not drop ALL", what)
			}
			nonRoot := podNonRoot
			if sc.RunAsNonRoot != nil {
				nonRoot = *sc.RunAsNonRoot
			}
			switch {
			case !nonRoot && !init:
				t.Errorf("%s: runs without runAsNonRoot: true", what)
			case !nonRoot && sc.Capabilities != nil:
				// chown 0:0 before chmod spares FOWNER (see TestKubeManifestBroker).
				for _, c := range sc.Capabilities.Add {
					if c != "CHOWN" {
						t.Errorf("%s: a root init container adds capability %s; handing directories over needs only CHOWN", what, c)
					}
				}
			case sc.Capabilities != nil && len(sc.Capabilities.Add) > 0:
				t.Errorf("%s: adds capabilities %v", what, sc.Capabilities.Add)
			}
		}
	}
}

// kubeEnv resolves a container's environment as the kubelet would:
// envFrom first, env over it. Values from a Secret become a fake.
func kubeEnv(t *testing.T, m *kubeManifest, c kubeContainer) map[string]string {
	t.Helper()
	env := map[string]string{}
	for _, ef := range c.EnvFrom {
		if ef.ConfigMapRef != nil {
			for k, v := range m.configMaps[ef.ConfigMapRef.Name].Data {
				env[k] = v
			}
		}
		if ef.SecretRef != nil {
			for k := range m.secrets[ef.SecretRef.Name].StringData {
				env[k] = "example-secret"
			}
		}
	}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = e.Value
		case e.ValueFrom.SecretKeyRef != nil:
			env[e.Name] = "example-secret"
		case e.ValueFrom.ConfigMapKeyRef != nil:
			r := e.ValueFrom.ConfigMapKeyRef
			env[e.Name] = m.configMaps[r.Name].Data[r.Key]
		}
	}
	return env
}

// kubeMountOf returns the container's mount that holds p (the deepest one)
// and the volume behind it.
func kubeMountOf(spec *kubePodSpec, c kubeContainer, p string) (mountPath, rel string, vol kubeVolume, readOnly, ok bool) {
	for _, vm := range c.VolumeMounts {
		r, under := pathUnder(p, vm.MountPath)
		if !under || len(vm.MountPath) <= len(mountPath) {
			continue
		}
		for _, v := range spec.Volumes {
			if v.Name == vm.Name {
				mountPath, rel, vol, readOnly, ok = vm.MountPath, r, v, vm.ReadOnly, true
			}
		}
	}
	return
}

// kubeBroker returns the broker's pod spec and container.
func kubeBroker(t *testing.T, m *kubeManifest) (*kubeWorkload, kubeContainer) {
	t.Helper()
	w, ok := m.workloads["DaemonSet/tokenbroker"]
	if !ok {
		t.Fatal("no DaemonSet tokenbroker")
	}
	for _, c := range w.Spec.Template.Spec.Containers {
		if c.Image == brokerImage {
			return &w, c
		}
	}
	t.Fatalf("DaemonSet tokenbroker has no container running %s", brokerImage)
	return nil, kubeContainer{}
}

// The broker's container: the image's entrypoint with "serve", the
// Dockerfile's user, a configuration that loadConfig accepts, every secret a
// file of a Secret volume it reads directly (so that a rotation reaches it),
// the socket and the state on node directories that an init container hands
// to the broker's user.
func TestKubeManifestBroker(t *testing.T) {
	m := readKubeManifest(t)
	df := readDockerfile(t)
	w, c := kubeBroker(t, m)
	spec := &w.Spec.Template.Spec

	if len(c.Command) != 0 || !slices.Equal(c.Args, []string{"serve"}) {
		t.Errorf("broker: command %q args %q; want the image's entrypoint with args [serve]", c.Command, c.Args)
	}
	if sc := c.SecurityContext; sc == nil || sc.RunAsUser == nil || *sc.RunAsUser != df.uid || sc.RunAsGroup == nil || *sc.RunAsGroup != df.gid {
		t.Errorf("broker: want runAsUser %d and runAsGroup %d, the Dockerfile's USER (its directories belong to it)", df.uid, df.gid)
	}
	if ru := w.Spec.UpdateStrategy; ru == nil || ru.RollingUpdate == nil || ru.RollingUpdate.MaxSurge != "0" {
		t.Error("broker: updateStrategy.rollingUpdate.maxSurge is not 0: two brokers on a node would share a socket and a state directory")
	}
	probes := 0
	for _, pr := range []*kubeProbe{c.StartupProbe, c.ReadinessProbe, c.LivenessProbe} {
		if pr == nil || pr.Exec == nil {
			continue
		}
		probes++
		cmd := pr.Exec.Command
		if len(cmd) < 2 || cmd[0] != df.entrypoint || !isSubcommand(cmd[1]) {
			t.Errorf("broker: probe %q is not %s SUBCOMMAND (the Dockerfile's binary and one of its subcommands)", cmd, df.entrypoint)
		}
	}
	if probes == 0 {
		t.Error("broker: no probes")
	}

	env := kubeEnv(t, m, c)
	checkBrokerEnv(t, "DaemonSet tokenbroker", env)

	// The socket and the state live on node directories the broker may write.
	uid := strconv.FormatInt(df.uid, 10) + ":" + strconv.FormatInt(df.gid, 10)
	type initMount struct{ volume, mountPath, script string }
	var initMounts []initMount
	for _, ic := range spec.InitContainers {
		script := strings.Join(slices.Concat(ic.Command, ic.Args), " ")
		for _, vm := range ic.VolumeMounts {
			initMounts = append(initMounts, initMount{vm.Name, vm.MountPath, script})
		}
	}
	for _, k := range []string{envPrefix + varSocket, envPrefix + varStateDir} {
		p := env[k]
		if k == envPrefix+varSocket {
			p = path.Dir(p)
		}
		_, _, vol, ro, ok := kubeMountOf(spec, c, p)
		switch {
		case !ok:
			t.Errorf("broker: %s=%s is on no volume: the read-only root filesystem would refuse it", k, env[k])
			continue
		case ro:
			t.Errorf("broker: %s=%s is on a read-only mount", k, env[k])
		case vol.HostPath != nil:
			// A hostPath directory the kubelet creates is root's, 0755: an
			// init container must hand it to the broker's user.
			handed := slices.ContainsFunc(initMounts, func(im initMount) bool {
				return im.volume == vol.Name && strings.Contains(im.script, "chown "+uid+" "+im.mountPath+"\n")
			})
			if !handed {
				t.Errorf("broker: %s is on hostPath %s, and no init container runs chown %s on it", k, vol.HostPath.Path, uid)
			}
		}
	}
	if _, _, vol, _, ok := kubeMountOf(spec, c, path.Dir(env[envPrefix+varSocket])); ok && vol.HostPath == nil {
		t.Errorf("broker: the socket's directory is volume %s, not a hostPath: pods on the node cannot reach it", vol.Name)
	}

	// Without FOWNER, root may chmod only what root owns, and a node
	// directory an earlier pod handed over belongs to the broker: each chmod
	// of a hostPath mount must follow a chown 0:0 of the same path.
	for _, ic := range spec.InitContainers {
		hostMounts := map[string]bool{}
		for _, vm := range ic.VolumeMounts {
			if i := slices.IndexFunc(spec.Volumes, func(v kubeVolume) bool { return v.Name == vm.Name }); i >= 0 && spec.Volumes[i].HostPath != nil {
				hostMounts[path.Clean(vm.MountPath)] = true
			}
		}
		rootOwns := map[string]bool{}
		for _, line := range strings.Split(strings.Join(slices.Concat(ic.Command, ic.Args), "\n"), "\n") {
			f := strings.Fields(line)
			if len(f) != 3 {
				continue
			}
			switch f[0] {
			case "chown":
				rootOwns[path.Clean(f[2])] = f[1] == "0:0" || f[1] == "root:root"
			case "chmod":
				if p := path.Clean(f[2]); hostMounts[p] && !rootOwns[p] {
					t.Errorf("broker: init container %s runs %q before chown 0:0 %s: when an earlier pod handed %s to the broker, chmod fails without FOWNER", ic.Name, line, f[2], f[2])
				}
			}
		}
	}

	// Every _FILE is a key of a Secret, read where the kubelet writes it: on
	// a Secret volume, mounted whole and read-only (kubeContainer models no
	// subPath, which the kubelet never updates), so that the broker sees a
	// changed Secret without a restart. A copy made at pod start would not.
	secretVols := map[string]kubeVolume{}
	files := map[string]string{} // _FILE variable: its path inside the volume
	for _, k := range slices.Sorted(maps.Keys(env)) {
		v := env[k]
		if !strings.HasPrefix(k, envPrefix) || !strings.HasSuffix(k, fileSuffix) {
			continue
		}
		_, rel, vol, ro, ok := kubeMountOf(spec, c, v)
		if !ok {
			t.Errorf("broker: %s=%s is on no volume", k, v)
			continue
		}
		if !ro {
			t.Errorf("broker: %s=%s: mount the secrets readOnly", k, v)
		}
		if vol.Secret == nil {
			t.Errorf("broker: %s=%s is on volume %s, not a Secret volume: the broker must read the Secret where the kubelet updates it, or it never sees a rotation", k, v, vol.Name)
			continue
		}
		secretVols[vol.Name] = vol
		files[k] = rel
		key := rel
		if len(vol.Secret.Items) > 0 {
			key = ""
			for _, it := range vol.Secret.Items {
				if path.Clean(it.Path) == rel {
					key = it.Key
				}
			}
		}
		if !m.secrets[vol.Secret.SecretName].hasKey(key) {
			t.Errorf("broker: %s=%s: Secret %s has no key for %q", k, v, vol.Secret.SecretName, rel)
		}
	}

	// The Secret's files belong to root; the broker reads them through their
	// group, which the pod's fsGroup sets (the kubelet then adds 0440 to the
	// mode). The broker refuses a file every user may read or others may
	// write, as readSecretFile does.
	var fsGroup *int64
	if spec.SecurityContext != nil {
		fsGroup = spec.SecurityContext.FSGroup
	}
	if fsGroup == nil || *fsGroup != df.gid {
		t.Errorf("broker: the pod's securityContext.fsGroup is %s; want %d, the broker's group: the Secret's files are root's, and the broker reads them as a member of their group", fmtInt64(fsGroup), df.gid)
	}
	modes := map[string]os.FileMode{} // volume: its files' mode
	for _, name := range slices.Sorted(maps.Keys(secretVols)) {
		vol := secretVols[name]
		mode := os.FileMode(0o644) // Kubernetes' default
		if vol.Secret.DefaultMode != nil {
			mode = os.FileMode(*vol.Secret.DefaultMode)
		}
		if fsGroup != nil {
			mode |= 0o440
		}
		if mode&0o026 != 0 {
			t.Errorf("broker: Secret volume %s: defaultMode %s makes its files %04o, readable by every user or writable by others; the broker refuses them (want 0440)", name, fmtInt(vol.Secret.DefaultMode), mode)
		}
		modes[name] = mode
	}

	// No init container touches the secrets: the broker reads them itself.
	for _, ic := range spec.InitContainers {
		for _, vm := range ic.VolumeMounts {
			if i := slices.IndexFunc(spec.Volumes, func(v kubeVolume) bool { return v.Name == vm.Name }); i >= 0 && spec.Volumes[i].Secret != nil {
				t.Errorf("broker: init container %s mounts Secret volume %s; the broker reads the Secret where the kubelet updates it, and a copy made at start misses every rotation", ic.Name, vm.Name)
			}
		}
		for _, e := range ic.Env {
			if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
				t.Errorf("broker: init container %s reads Secret %s", ic.Name, e.ValueFrom.SecretKeyRef.Name)
			}
		}
		for _, ef := range ic.EnvFrom {
			if ef.SecretRef != nil {
				t.Errorf("broker: init container %s reads Secret %s", ic.Name, ef.SecretRef.Name)
			}
		}
	}

	// The files as the kubelet lays them out (a timestamped directory, ..data
	// a symlink to it, each key a symlink through ..data), with the mode
	// above: the broker accepts them, and when the kubelet swaps ..data to a
	// new Secret, the broker's poll sees the change and reads the new value.
	for _, name := range slices.Sorted(maps.Keys(secretVols)) {
		dir := t.TempDir()
		var environ []string
		var keys []string
		for k, rel := range files {
			if _, _, vol, _, _ := kubeMountOf(spec, c, env[k]); vol.Name == name {
				environ = append(environ, k+"="+filepath.Join(dir, rel))
				keys = append(keys, rel)
			}
		}
		kubeletWriteSecret(t, dir, keys, modes[name], "1")
		before := secretFiles(fileSettings(environ))
		refused := false
		for _, kv := range environ {
			k, p, _ := strings.Cut(kv, "=")
			if s, err := config.ReadSecretFile(p); err != nil {
				t.Errorf("broker: %s: the broker refuses the file the kubelet writes (mode %04o): %v", k, modes[name], err)
				refused = true
				break
			} else if s.Reveal() != "value-1" {
				t.Errorf("broker: %s: read %q; want value-1", k, s.Reveal())
			}
		}
		if refused {
			continue
		}
		kubeletWriteSecret(t, dir, keys, modes[name], "2")
		if slices.Equal(before, secretFiles(fileSettings(environ))) {
			t.Errorf("broker: Secret volume %s: the broker's poll does not see the kubelet's swap of ..data", name)
		}
		for _, kv := range environ {
			k, p, _ := strings.Cut(kv, "=")
			if s, err := config.ReadSecretFile(p); err != nil || s.Reveal() != "value-2" {
				t.Errorf("broker: %s: after the kubelet's swap, read %q, %v; want value-2", k, s.Reveal(), err)
			}
		}
	}

	// Redis is the Service of this file, on its port.
	if raw := env[envPrefix+varRedisURL]; raw != "" {
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatalf("broker: %s: %v", varRedisURL, err)
		}
		s, ok := m.services[u.Hostname()]
		if !ok {
			t.Errorf("broker: %s=%s names host %s, which is no Service of this file", varRedisURL, raw, u.Hostname())
		}
		if !slices.ContainsFunc(s.Spec.Ports, func(p kubeServicePort) bool { return strconv.Itoa(p.Port) == u.Port() }) {
			t.Errorf("broker: %s=%s: Service %s has no port %s", varRedisURL, raw, u.Hostname(), u.Port())
		}
	}
}

// kubeletWriteSecret writes keys into dir as the kubelet writes a Secret
// volume (its atomic writer): each key's file, holding "value-"+gen, in a
// new directory ..gen; then ..data, a symlink to it, replaced by a rename;
// each key (its first path element) a symlink into ..data.
func kubeletWriteSecret(t *testing.T, dir string, keys []string, mode os.FileMode, gen string) {
	t.Helper()
	ts := filepath.Join(dir, ".."+gen)
	for _, k := range keys {
		p := filepath.Join(ts, k)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("value-"+gen+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		top, _, _ := strings.Cut(k, "/") // a nested key is linked by its first element
		link := filepath.Join(dir, top)
		if _, err := os.Lstat(link); err != nil {
			if err := os.Symlink(filepath.Join("..data", top), link); err != nil {
				t.Fatal(err)
			}
		}
	}
	tmp := filepath.Join(dir, "..data_tmp")
	if err := os.Symlink(filepath.Base(ts), tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
}

func fmtInt64(p *int64) string {
	if p == nil {
		return "unset"
	}
	return strconv.FormatInt(*p, 10)
}

func fmtInt(p *int) string {
	if p == nil {
		return "unset (0644)"
	}
	return fmt.Sprintf("%04o", *p)
}

// The example client reaches the broker's socket through the same node
// directory, as a member of the socket's group, and asks the way the README
// says.
func TestKubeManifestClient(t *testing.T) {
	m := readKubeManifest(t)
	df := readDockerfile(t)
	w, bc := kubeBroker(t, m)
	benv := kubeEnv(t, m, bc)
	cfg := checkBrokerEnv(t, "DaemonSet tokenbroker", benv)
	bsock := benv[envPrefix+varSocket]
	_, brel, bvol, _, ok := kubeMountOf(&w.Spec.Template.Spec, bc, bsock)
	if !ok || bvol.HostPath == nil {
		t.Fatalf("the broker's socket %s is not on a hostPath volume", bsock)
	}
	nodeSock := path.Join(bvol.HostPath.Path, brel)

	p, ok := m.pods["tokenbroker-client"]
	if !ok {
		t.Fatal("no Pod tokenbroker-client")
	}
	if len(p.Spec.Containers) != 1 {
		t.Fatalf("Pod tokenbroker-client has %d containers; want 1", len(p.Spec.Containers))
	}
	c := p.Spec.Containers[0]
	env := kubeEnv(t, m, c)
	for k := range env {
		if strings.HasPrefix(k, envPrefix) && k != envPrefix+varSocket {
			t.Errorf("client: sets %s; a client reads only %s%s", k, envPrefix, varSocket)
		}
	}
	sock := env[envPrefix+varSocket]
	_, rel, vol, ro, ok := kubeMountOf(&p.Spec, c, sock)
	switch {
	case !ok || vol.HostPath == nil:
		t.Errorf("client: %s=%s is not on a hostPath volume", varSocket, sock)
	case path.Join(vol.HostPath.Path, rel) != nodeSock:
		t.Errorf("client: its socket is %s on the node; the broker's is %s", path.Join(vol.HostPath.Path, rel), nodeSock)
	case !ro:
		t.Error("client: mount the broker's directory readOnly; connecting needs no write access to the mount")
	}
	// The socket is 0660 and its directory 0750, both of the broker's group.
	sc := p.Spec.SecurityContext
	if sc == nil || !slices.Contains(sc.SupplementalGroups, df.gid) && (sc.RunAsGroup == nil || *sc.RunAsGroup != df.gid) {
		t.Errorf("client: not in group %d, the broker's: it could not open the socket", df.gid)
	}
	// $(VAR) in args is expanded by the kubelet from the container's env.
	argv := slices.Concat(c.Command, c.Args)
	for i, a := range argv {
		for k, v := range env {
			a = strings.ReplaceAll(a, "$("+k+")", v)
		}
		argv[i] = a
	}
	if len(argv) == 0 || argv[0] != "curl" {
		t.Fatalf("client: runs %q; want curl", argv)
	}
	checkCurlClient(t, "client", argv, sock, cfg)
}

// kubectl validates the file against the cluster's schema, where there is a
// cluster: even --dry-run=client asks the API server for the schema.
func TestKubeManifestKubectl(t *testing.T) {
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		t.Skip("kubectl is not installed; the schema checks above stand in for it")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, kubectl, "version", "--request-timeout=5s").CombinedOutput(); err != nil {
		t.Skipf("kubectl reaches no cluster, and needs one even for --dry-run=client (%v): %s", err, lastLine(out))
	}
	for _, p := range kubeManifestPaths {
		out, err := exec.CommandContext(ctx, kubectl, "apply", "--dry-run=client", "-f", p).CombinedOutput()
		if err != nil {
			t.Errorf("kubectl apply --dry-run=client -f %s: %v\n%s", p, err, out)
		}
	}
}

func lastLine(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return lines[len(lines)-1]
}

// ---- docker compose ----

type composeFile struct {
	Name     string                    `yaml:"name"`
	XBroker  *composeService           `yaml:"x-broker"` // merged into the brokers with <<
	Services map[string]composeService `yaml:"services"`
	Volumes  map[string]*struct{}      `yaml:"volumes"`
	Secrets  map[string]struct {
		File string `yaml:"file"`
	} `yaml:"secrets"`
}

type composeService struct {
	Image string `yaml:"image"`
	Build *struct {
		Context    string `yaml:"context"`
		Dockerfile string `yaml:"dockerfile"`
	} `yaml:"build"`
	Command     []string `yaml:"command"`
	Restart     string   `yaml:"restart"`
	ReadOnly    bool     `yaml:"read_only"`
	CapDrop     []string `yaml:"cap_drop"`
	SecurityOpt []string `yaml:"security_opt"`
	GroupAdd    []string `yaml:"group_add"`
	DependsOn   map[string]struct {
		Condition string `yaml:"condition"`
	} `yaml:"depends_on"`
	Environment map[string]string `yaml:"environment"`
	Secrets     []string          `yaml:"secrets"`
	Volumes     []string          `yaml:"volumes"`
	Healthcheck *struct {
		Test        []string `yaml:"test"`
		Interval    string   `yaml:"interval"`
		Timeout     string   `yaml:"timeout"`
		Retries     int      `yaml:"retries"`
		StartPeriod string   `yaml:"start_period"`
	} `yaml:"healthcheck"`
}

// composeMount is one short-syntax volume: SOURCE:TARGET[:ro].
type composeMount struct {
	source, target string
	named, ro      bool
}

func composeMounts(t *testing.T, svc string, s composeService) []composeMount {
	t.Helper()
	var out []composeMount
	for _, v := range s.Volumes {
		parts := strings.Split(v, ":")
		if len(parts) < 2 || len(parts) > 3 || len(parts) == 3 && parts[2] != "ro" && parts[2] != "rw" {
			t.Errorf("service %s: volume %q is not SOURCE:TARGET[:ro]", svc, v)
			continue
		}
		named := !strings.HasPrefix(parts[0], ".") && !strings.HasPrefix(parts[0], "/") && !strings.HasPrefix(parts[0], "~")
		out = append(out, composeMount{parts[0], parts[1], named, len(parts) == 3 && parts[2] == "ro"})
	}
	return out
}

// composeMountOf returns the service's mount that holds p (the deepest one).
func composeMountOf(mounts []composeMount, p string) (composeMount, string, bool) {
	var best composeMount
	var rel string
	ok := false
	for _, m := range mounts {
		if r, under := pathUnder(p, m.target); under && len(m.target) > len(best.target) {
			best, rel, ok = m, r, true
		}
	}
	return best, rel, ok
}

func readComposeFile(t *testing.T) *composeFile {
	t.Helper()
	b, err := os.ReadFile(composeManifestPath)
	if err != nil {
		t.Fatal(err)
	}
	var f composeFile
	if err := decodeStrict(b, &f); err != nil {
		t.Fatalf("%s: %v", composeManifestPath, err)
	}
	return &f
}

var composeBrokers = []string{"broker-a", "broker-b"}

// The file parses strictly and every name it uses is declared: services
// of depends_on, named volumes, secrets (whose files exist), build contexts.
func TestComposeManifestReferences(t *testing.T) {
	f := readComposeFile(t)
	for _, want := range append([]string{"redis", "client"}, composeBrokers...) {
		if _, ok := f.Services[want]; !ok {
			t.Errorf("no service %s", want)
		}
	}
	usedVolumes, usedSecrets := map[string]bool{}, map[string]bool{}
	for _, name := range slices.Sorted(maps.Keys(f.Services)) {
		s := f.Services[name]
		if s.Image == "" && s.Build == nil {
			t.Errorf("service %s: neither image nor build", name)
		}
		if s.Build != nil {
			ctx := filepath.Join(filepath.Dir(composeManifestPath), s.Build.Context)
			df := orDefault(s.Build.Dockerfile, "Dockerfile")
			if _, err := os.Stat(filepath.Join(ctx, df)); err != nil {
				t.Errorf("service %s: build context %s has no %s: %v", name, s.Build.Context, df, err)
			}
		}
		for dep, d := range s.DependsOn {
			target, ok := f.Services[dep]
			switch {
			case !ok:
				t.Errorf("service %s depends on %q, which is no service", name, dep)
			case !slices.Contains([]string{"service_started", "service_healthy", "service_completed_successfully"}, d.Condition):
				t.Errorf("service %s: depends_on %s: condition %q is not one compose knows", name, dep, d.Condition)
			case d.Condition == "service_healthy" && target.Healthcheck == nil:
				t.Errorf("service %s waits for %s to be healthy, and %s has no healthcheck", name, dep, dep)
			}
		}
		if s.Healthcheck != nil && (len(s.Healthcheck.Test) < 2 || s.Healthcheck.Test[0] != "CMD") {
			t.Errorf("service %s: healthcheck test %q is not [CMD, ...]", name, s.Healthcheck.Test)
		}
		for _, m := range composeMounts(t, name, s) {
			if !m.named {
				continue
			}
			usedVolumes[m.source] = true
			if _, ok := f.Volumes[m.source]; !ok {
				t.Errorf("service %s mounts volume %q, which the file does not declare", name, m.source)
			}
		}
		for _, sec := range s.Secrets {
			usedSecrets[sec] = true
			if _, ok := f.Secrets[sec]; !ok {
				t.Errorf("service %s uses secret %q, which the file does not declare", name, sec)
			}
		}
	}
	for v := range f.Volumes {
		if !usedVolumes[v] {
			t.Errorf("volume %s is declared but no service mounts it", v)
		}
	}
	for name, s := range f.Secrets {
		if !usedSecrets[name] {
			t.Errorf("secret %s is declared but no service uses it", name)
		}
		file, err := composeDefaults(s.File)
		if err != nil {
			t.Errorf("secret %s: %v", name, err)
			continue
		}
		p := filepath.Join(filepath.Dir(composeManifestPath), file)
		if st, err := os.Stat(p); err != nil || !st.Mode().IsRegular() || st.Size() == 0 {
			t.Errorf("secret %s: file %s is missing or empty (%v)", name, file, err)
		}
	}
}

// composeDefaults interpolates s as compose would with none of its
// variables set: ${NAME:-default} and ${NAME-default} become the default.
// Any other use of $ is refused, so that the test sees every file it checks.
func composeDefaults(s string) (string, error) {
	var out strings.Builder
	for {
		i := strings.IndexByte(s, '$')
		if i < 0 {
			return out.String() + s, nil
		}
		out.WriteString(s[:i])
		s = s[i:]
		if strings.HasPrefix(s, "$$") {
			out.WriteByte('$')
			s = s[2:]
			continue
		}
		end := strings.IndexByte(s, '}')
		if !strings.HasPrefix(s, "${") || end < 0 {
			return "", fmt.Errorf("%q: only ${NAME:-default} is understood here", s)
		}
		_, def, ok := strings.Cut(s[2:end], "-")
		if !ok {
			return "", fmt.Errorf("%q has no default", s[:end+1])
		}
		out.WriteString(def)
		s = s[end+1:]
	}
}

func orDefault(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// Each broker: the image built from this repository, "serve", a healthcheck
// that runs the image's binary, an environment loadConfig accepts whose
// secrets are the service's compose secrets, its own state and socket on
// volumes the image's user owns, and the same credential settings as the
// other brokers of the fleet.
func TestComposeManifestBrokers(t *testing.T) {
	f := readComposeFile(t)
	df := readDockerfile(t)
	var first map[string]string
	states := map[string]string{}
	sockets := map[string]string{}
	for _, name := range composeBrokers {
		s, ok := f.Services[name]
		if !ok {
			t.Errorf("no service %s", name)
			continue
		}
		if s.Image != brokerImage || s.Build == nil || filepath.Clean(filepath.Join(filepath.Dir(composeManifestPath), s.Build.Context)) != filepath.Clean("../..") {
			t.Errorf("%s: want image %s built from the repository root (build.context ..)", name, brokerImage)
		}
		if !slices.Equal(s.Command, []string{"serve"}) {
			t.Errorf("%s: command %q; want [serve]", name, s.Command)
		}
		if hc := s.Healthcheck; hc == nil || len(hc.Test) < 3 || hc.Test[1] != df.entrypoint || !isSubcommand(hc.Test[2]) {
			t.Errorf("%s: the healthcheck does not run %s SUBCOMMAND", name, df.entrypoint)
		}
		if !s.ReadOnly || !slices.Equal(s.CapDrop, []string{"ALL"}) || !slices.Contains(s.SecurityOpt, "no-new-privileges:true") {
			t.Errorf("%s: want read_only, cap_drop [ALL] and no-new-privileges", name)
		}
		if d, ok := s.DependsOn["redis"]; !ok || d.Condition != "service_healthy" {
			t.Errorf("%s: does not wait for redis to be healthy", name)
		}
		env := s.Environment
		checkBrokerEnv(t, name, env)

		if raw := env[envPrefix+varRedisURL]; raw != "" {
			u, err := url.Parse(raw)
			if err != nil {
				t.Errorf("%s: %s: %v", name, varRedisURL, err)
			} else if _, ok := f.Services[u.Hostname()]; !ok {
				t.Errorf("%s: %s=%s names host %s, which is no service", name, varRedisURL, raw, u.Hostname())
			} else if _, ok := s.DependsOn[u.Hostname()]; !ok {
				t.Errorf("%s: uses Redis at %s without depending on it", name, u.Hostname())
			}
		}
		for k, v := range env {
			if !strings.HasPrefix(k, envPrefix) || !strings.HasSuffix(k, fileSuffix) {
				continue
			}
			sec, ok := strings.CutPrefix(v, "/run/secrets/")
			if !ok || !slices.Contains(s.Secrets, sec) {
				t.Errorf("%s: %s=%s is not /run/secrets/NAME for a secret the service uses (%v)", name, k, v, s.Secrets)
			}
		}

		mounts := composeMounts(t, name, s)
		sock := env[envPrefix+varSocket]
		if m, _, ok := composeMountOf(mounts, path.Dir(sock)); !ok || !m.named || m.ro {
			t.Errorf("%s: the socket's directory %s is not on a writable named volume (which starts as the image's directory, owned by its user)", name, path.Dir(sock))
		} else {
			rel, _ := pathUnder(sock, m.target)
			key := m.source + ":" + rel
			if other, dup := sockets[key]; dup {
				t.Errorf("%s and %s share the socket %s", other, name, key)
			}
			sockets[key] = name
		}
		if m, _, ok := composeMountOf(mounts, env[envPrefix+varStateDir]); !ok || !m.named || m.ro {
			t.Errorf("%s: the state directory is not on a writable named volume", name)
		} else {
			if other, dup := states[m.source]; dup {
				t.Errorf("%s and %s share the state volume %s: each broker needs its own", other, name, m.source)
			}
			states[m.source] = name
		}

		// The fleet shares every setting but the socket and the state.
		cred := map[string]string{}
		for k, v := range env {
			if k != envPrefix+varSocket && k != envPrefix+varStateDir {
				cred[k] = v
			}
		}
		if first == nil {
			first = cred
		} else if fmt.Sprint(first) != fmt.Sprint(cred) {
			t.Errorf("%s: its settings differ from %s's; every broker of a fleet needs the same ones", name, composeBrokers[0])
		}
	}
}

// The client reads broker-a's socket through broker-a's socket volume, as a
// member of the socket's group, and asks the way the README says.
func TestComposeManifestClient(t *testing.T) {
	f := readComposeFile(t)
	df := readDockerfile(t)
	broker, ok := f.Services["broker-a"]
	if !ok {
		t.Fatal("no service broker-a")
	}
	cfg := checkBrokerEnv(t, "broker-a", broker.Environment)
	bsock := broker.Environment[envPrefix+varSocket]
	bm, brel, ok := composeMountOf(composeMounts(t, "broker-a", broker), bsock)
	if !ok || !bm.named {
		t.Fatalf("broker-a: its socket %s is not on a named volume", bsock)
	}
	c, ok := f.Services["client"]
	if !ok {
		t.Fatal("no service client")
	}
	if d, ok := c.DependsOn["broker-a"]; !ok || d.Condition != "service_healthy" {
		t.Error("client: does not wait for broker-a to be healthy (and the socket volume must be created by broker-a, from its image)")
	}
	for k := range c.Environment {
		if strings.HasPrefix(k, envPrefix) && k != envPrefix+varSocket {
			t.Errorf("client: sets %s; a client reads only %s%s", k, envPrefix, varSocket)
		}
	}
	sock := c.Environment[envPrefix+varSocket]
	m, rel, ok := composeMountOf(composeMounts(t, "client", c), sock)
	switch {
	case !ok:
		t.Errorf("client: %s=%s is on no volume", varSocket, sock)
	case m.source != bm.source || rel != brel:
		t.Errorf("client: its socket is %s:%s; broker-a's is %s:%s", m.source, rel, bm.source, brel)
	case !m.ro:
		t.Error("client: mount the socket volume read-only; connecting needs no write access to the mount")
	}
	if !slices.Contains(c.GroupAdd, strconv.FormatInt(df.gid, 10)) {
		t.Errorf("client: group_add lacks %d, the broker's group: it could not open the socket", df.gid)
	}
	if len(c.Command) == 0 || c.Command[0] != "curl" {
		t.Fatalf("client: runs %q; want curl", c.Command)
	}
	checkCurlClient(t, "client", c.Command, sock, cfg)
}

// docker compose validates the file against the compose schema, where it is
// installed (the command needs no Docker engine).
func TestComposeManifestDockerCompose(t *testing.T) {
	docker, err := exec.LookPath("docker")
	if err != nil {
		t.Skip("docker is not installed; the schema checks above stand in for docker compose config")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, docker, "compose", "version").CombinedOutput(); err != nil {
		t.Skipf("docker compose is not available (%v): %s", err, lastLine(out))
	}
	cmd := exec.CommandContext(ctx, docker, "compose", "-f", composeManifestPath, "config", "-q")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("docker compose -f %s config -q: %v\n%s", composeManifestPath, err, out)
	}
}
