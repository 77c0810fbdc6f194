package redistest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// start runs a redis-server with extra arguments on a fresh port.
func start(t testing.TB, args ...string) *Server {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatalf("redis-server not found: run the README test command (bash .ci/test), which installs it")
	}
	s := &Server{t: t, port: freePort(t), dir: t.TempDir(), extra: args}
	s.launch()
	t.Cleanup(s.Kill)
	return s
}

// Cluster is three Redis Cluster masters, no replicas.
type Cluster struct{ Nodes []*Server }

// StartCluster creates a three-master cluster with redis-cli --cluster
// create and waits until every node reports cluster_state:ok.
func StartCluster(t testing.TB) *Cluster {
	t.Helper()
	c := &Cluster{}
	var addrs []string
	for range 3 {
		n := start(t, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000")
		c.Nodes = append(c.Nodes, n)
		addrs = append(addrs, n.Addr())
	}
	out, err := exec.Command("redis-cli", append(append([]string{"--cluster", "create"}, addrs...), "--cluster-replicas", "0", "--cluster-yes")...).CombinedOutput()
	if err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	deadline := time.Now().Add(20 * time.Second)
	for _, n := range c.Nodes {
		cl := redis.NewClient(&redis.Options{Addr: n.Addr()})
		for {
			info, _ := cl.ClusterInfo(context.Background()).Result()
			if strings.Contains(info, "cluster_state:ok") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("cluster not ok after 20s: %s", info)
			}
			time.Sleep(50 * time.Millisecond)
		}
		cl.Close()
	}
	return c
}

// Addrs lists the nodes' addresses.
func (c *Cluster) Addrs() []string {
	var a []string
	for _, n := range c.Nodes {
		a = append(a, n.Addr())
	}
	return a
}

// Sentinel is a master, a replica and three sentinels watching them.
type Sentinel struct {
	Master, Replica *Server
	Sentinels       []*Server
	Name            string
}

// StartSentinel starts the topology and waits until the sentinels agree
// on the master and see the replica.
func StartSentinel(t testing.TB) *Sentinel {
	t.Helper()
	s := &Sentinel{Name: "tbmaster"}
	s.Master = start(t)
	s.Replica = start(t, "--replicaof", "127.0.0.1", strconv.Itoa(s.Master.port))
	for range 3 {
		dir := t.TempDir()
		conf := filepath.Join(dir, "sentinel.conf")
		text := fmt.Sprintf("sentinel monitor %s 127.0.0.1 %d 2\nsentinel down-after-milliseconds %[1]s 1000\nsentinel failover-timeout %[1]s 5000\n", s.Name, s.Master.port)
		if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		s.Sentinels = append(s.Sentinels, start(t, "--sentinel-conf", conf))
	}
	deadline := time.Now().Add(20 * time.Second)
	for _, sn := range s.Sentinels {
		c := redis.NewSentinelClient(&redis.Options{Addr: sn.Addr()})
		for {
			reps, _ := c.Replicas(context.Background(), s.Name).Result()
			if len(reps) > 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("sentinels do not see the replica after 20s")
			}
			time.Sleep(100 * time.Millisecond)
		}
		c.Close()
	}
	return s
}

// Addrs lists the sentinels' addresses.
func (s *Sentinel) Addrs() []string {
	var a []string
	for _, n := range s.Sentinels {
		a = append(a, n.Addr())
	}
	return a
}
