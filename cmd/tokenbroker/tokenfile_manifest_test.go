package main

import (
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/tokenbroker/tokenbroker/api/tokenfile"
)

// The token-file sidecar example: the broker's environment loads; its
// token file, socket and state are in subdirectories of emptyDir volumes
// (whose own directory is 0777, which the broker refuses, as a real
// 0777 directory shows here); another container of the pod mounts the
// token file's volume read-only, may read the file through its group, and
// reads it with curl -H @FILE.
func TestKubeManifestTokenFileSidecar(t *testing.T) {
	m := readKubeManifest(t)
	df := readDockerfile(t)
	const what = "Deployment firework-uploader"
	w, ok := m.workloads["Deployment/firework-uploader"]
	if !ok {
		t.Fatal("no " + what)
	}
	spec := &w.Spec.Template.Spec
	var broker, reader *kubeContainer
	for i, c := range spec.Containers {
		if c.Image == brokerImage {
			broker = &spec.Containers[i]
		} else {
			reader = &spec.Containers[i]
		}
	}
	if broker == nil || reader == nil || len(spec.Containers) != 2 {
		t.Fatalf("%s: want a broker container (%s) and one that reads the file", what, brokerImage)
	}
	env := kubeEnv(t, m, *broker)
	cfg := checkBrokerEnv(t, what, env)
	var file string
	for k, v := range env {
		if isTokenFileVar(k) {
			file = v
		}
	}
	if file == "" || len(cfg.Credentials) != 1 {
		t.Fatalf("%s: no TOKEN_FILE, or %d credentials; want one with a token file", what, len(cfg.Credentials))
	}
	tf := cfg.Credentials[0].TokenFile

	// What the broker writes lies below its emptyDir mounts, never at them.
	for _, p := range []string{path.Dir(file), path.Dir(env[envPrefix+varSocket]), env[envPrefix+varStateDir]} {
		_, rel, vol, ro, ok := kubeMountOf(spec, *broker, p)
		switch {
		case !ok || ro:
			t.Errorf("%s: the broker's %s is on no writable mount", what, p)
		case vol.EmptyDir != nil && rel == ".":
			t.Errorf("%s: the broker's %s is an emptyDir's own directory, which is 0777: the broker refuses it; use a subdirectory", what, p)
		}
	}
	bmount, rel, vol, _, _ := kubeMountOf(spec, *broker, file)
	if vol.EmptyDir == nil {
		t.Errorf("%s: the token file %s is not on an emptyDir volume", what, file)
	}
	// The reader mounts that volume read-only and reads the file there.
	var readerFile string
	for _, vm := range reader.VolumeMounts {
		if vm.Name == vol.Name {
			readerFile = path.Join(vm.MountPath, rel)
			if !vm.ReadOnly {
				t.Errorf("%s: container %s mounts volume %s writable; it only reads the token", what, reader.Name, vm.Name)
			}
		}
	}
	script := strings.Join(slices.Concat(reader.Command, reader.Args), " ")
	if readerFile == "" || !strings.Contains(script, "curl ") || !strings.Contains(script, "-H @"+readerFile+" ") {
		t.Errorf("%s: container %s does not run curl -H @%s (the file as it mounts it):\n%s", what, reader.Name, readerFile, script)
	}
	if tf.Format != tokenfile.Header {
		t.Errorf("%s: curl -H @FILE needs _TOKEN_FILE_FORMAT=header; the file is %s", what, tf.Format)
	}
	// The reader runs as another user: it reads the file through its group.
	sc, rsc := spec.SecurityContext, reader.SecurityContext
	var groups []int64
	if sc != nil && sc.FSGroup != nil {
		groups = append(groups, *sc.FSGroup)
	}
	if sc != nil {
		groups = append(groups, sc.SupplementalGroups...)
	}
	if rsc != nil && rsc.RunAsGroup != nil {
		groups = append(groups, *rsc.RunAsGroup)
	}
	sameUser := rsc != nil && rsc.RunAsUser != nil && *rsc.RunAsUser == df.uid
	if !sameUser && (tf.Mode&0o040 == 0 || tf.GID <= 0 || !slices.Contains(groups, int64(tf.GID))) {
		t.Errorf("%s: container %s (groups %v) cannot read the token file (mode %04o, group %d)", what, reader.Name, groups, tf.Mode, tf.GID)
	}

	// An emptyDir as the kubelet makes it: the broker refuses its own
	// directory and accepts the subdirectory it makes in it.
	empty := filepath.Join(t.TempDir(), "emptydir")
	if err := os.Mkdir(empty, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(empty, 0o777); err != nil {
		t.Fatal(err)
	}
	at := func(p string) tokenfile.File {
		f := tf
		f.Path, f.GID = p, -1 // this host may lack the group; the mode rules are what is tested
		return f
	}
	if _, err := tokenfile.New(map[string]tokenfile.File{"firework": at(filepath.Join(empty, "header"))}, nil); err == nil {
		t.Error("the broker accepts a token file in a 0777 directory")
	}
	if _, err := tokenfile.New(map[string]tokenfile.File{"firework": at(filepath.Join(empty, filepath.FromSlash(rel)))}, nil); err != nil {
		t.Errorf("%s: the broker refuses the token file where the manifest puts it (%s under the emptyDir at %s): %v", what, rel, bmount, err)
	}
}
