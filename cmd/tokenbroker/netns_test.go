package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tokenbroker/tokenbroker/broker/redistest"
)

// netnsRequiredEnv turns "network namespaces are not available" from a skip
// into a failure, unless it is 0. .ci/test sets it when it runs as root, so
// that CI cannot skip the partition test without anyone noticing.
const netnsRequiredEnv = "TOKENBROKER_NETNS_REQUIRED"

// netnsPrefix names the namespaces these tests make: tbpart-PID-SEQ. The
// veth pair is tbpPIDhSEQ (host end) and tbpPIDnSEQ (namespace end), at
// most 15 characters.
const netnsPrefix = "tbpart-"

var (
	netnsSeq     atomic.Int32
	netnsName    = regexp.MustCompile(`^` + netnsPrefix + `(\d+)-\d+$`)
	netnsVethEnd = regexp.MustCompile(`^tbp(\d+)[hn]\d+$`)
)

// netns is a network namespace joined to the host by a veth pair, made for
// one test and removed by its cleanup. The pair's host end carries two
// addresses, one for Redis and one for the provider, so that a route in
// the namespace can cut Redis alone; nothing else gets an address.
type netns struct {
	ip           string // the ip command
	name         string
	hostIf, nsIf string
	redisIP      string // on the host end
	providerIP   string // on the host end
	nsIP         string // the namespace end
	deadIP       string // in the pair's subnet, on no interface: a host that never answers
}

// cutKind is one way to cut the namespace's broker from Redis.
type cutKind int

const (
	// cutLink sets the namespace's end of the pair down: Redis and the
	// provider are both unreachable, and sends fail at once.
	cutLink cutKind = iota
	// cutRedisBlackhole routes Redis's address to a blackhole in the
	// namespace: new connections fail at once, packets of open ones are
	// dropped, and the provider stays reachable.
	cutRedisBlackhole
	// cutRedisSilent routes Redis's address to a neighbour that never
	// answers: connections hang until their timeouts, as to a host that
	// vanished, and the provider stays reachable.
	cutRedisSilent
	cutKinds = 3
)

func (k cutKind) String() string {
	return [...]string{"link down", "Redis blackholed", "Redis silent"}[k]
}

// newNetns makes a namespace and its veth pair, or skips the test where
// that is impossible (not Linux, not root, no ip command, no namespaces):
// unless netnsRequiredEnv is set, then it fails.
func newNetns(t *testing.T) *netns {
	t.Helper()
	unavailable := func(format string, args ...any) {
		t.Helper()
		msg := fmt.Sprintf(format, args...)
		if v := os.Getenv(netnsRequiredEnv); v != "" && v != "0" {
			t.Fatalf("network namespaces are not available: %s (%s is set, as .ci/test does for root; set it to 0 to skip instead)", msg, netnsRequiredEnv)
		}
		t.Skipf("network namespaces are not available: %s; this test runs as root on Linux with iproute2 (CI does)", msg)
	}
	if runtime.GOOS != "linux" {
		unavailable("not Linux")
	}
	if os.Geteuid() != 0 {
		unavailable("not root")
	}
	ip := lookIP()
	if ip == "" {
		unavailable("no ip command (iproute2) in PATH, /usr/sbin or /sbin")
	}
	sweepNetns(t, ip)
	pid, seq := os.Getpid(), netnsSeq.Add(1)
	n := &netns{ip: ip, name: fmt.Sprintf("%s%d-%d", netnsPrefix, pid, seq),
		hostIf: fmt.Sprintf("tbp%dh%d", pid, seq), nsIf: fmt.Sprintf("tbp%dn%d", pid, seq)}
	if out, err := exec.Command(ip, "netns", "add", n.name).CombinedOutput(); err != nil {
		unavailable("ip netns add: %v: %s", err, strings.TrimSpace(string(out)))
	}
	t.Cleanup(func() { n.remove(t) })
	if err := n.run("link", "add", n.hostIf, "type", "veth", "peer", "name", n.nsIf); err != nil {
		unavailable("a veth pair: %v", err)
	}
	prefix := n.pickSubnet(t)
	n.redisIP, n.providerIP, n.nsIP, n.deadIP = prefix+"1", prefix+"2", prefix+"3", prefix+"4"
	for _, args := range [][]string{
		{"link", "set", n.nsIf, "netns", n.name},
		{"addr", "add", n.redisIP + "/24", "dev", n.hostIf},
		{"addr", "add", n.providerIP + "/24", "dev", n.hostIf},
		{"link", "set", n.hostIf, "up"},
		{"-n", n.name, "addr", "add", n.nsIP + "/24", "dev", n.nsIf},
		{"-n", n.name, "link", "set", n.nsIf, "up"},
		{"-n", n.name, "link", "set", "lo", "up"},
	} {
		if err := n.run(args...); err != nil {
			t.Fatal(err)
		}
	}
	return n
}

func lookIP() string {
	if p, err := exec.LookPath("ip"); err == nil {
		return p
	}
	for _, p := range []string{"/usr/sbin/ip", "/sbin/ip"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}

// run runs the ip command with args.
func (n *netns) run(args ...string) error {
	if out, err := exec.Command(n.ip, args...).CombinedOutput(); err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// command runs name with args inside the namespace; ctx kills it.
func (n *netns) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, n.ip, append([]string{"netns", "exec", n.name, name}, args...)...)
	// A test killed outright takes the process with it: a daemon left
	// running would keep the namespace alive.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd
}

// pickSubnet picks a /24 of 198.18.0.0/15 (RFC 2544, for benchmark
// networks: on no real network) that no interface or route here uses, and
// returns its first three octets with the dot.
func (n *netns) pickSubnet(t *testing.T) string {
	t.Helper()
	addrs, err := exec.Command(n.ip, "-o", "-4", "addr", "show").CombinedOutput()
	if err != nil {
		t.Fatalf("ip addr show: %v: %s", err, addrs)
	}
	routes, err := exec.Command(n.ip, "-4", "route", "show", "table", "all").CombinedOutput()
	if err != nil {
		t.Fatalf("ip route show: %v: %s", err, routes)
	}
	// Every word preceded by a space, so " 198.18.5." matches an address
	// or a route at a line's start alike.
	used := " " + strings.Join(strings.Fields(string(addrs)+" "+string(routes)), " ")
	for i := range 512 {
		idx := (os.Getpid() + i) % 512
		prefix := fmt.Sprintf("198.%d.%d.", 18+idx/256, idx%256)
		if !strings.Contains(used, " "+prefix) {
			return prefix
		}
	}
	t.Fatal("every /24 of 198.18.0.0/15 is in use here")
	return ""
}

// cut cuts the namespace's link to Redis as kind says; restore undoes it.
func (n *netns) cut(kind cutKind) error {
	switch kind {
	case cutLink:
		return n.run("-n", n.name, "link", "set", n.nsIf, "down")
	case cutRedisBlackhole:
		return n.run("-n", n.name, "route", "add", "blackhole", n.redisIP+"/32")
	default:
		return n.run("-n", n.name, "route", "add", n.redisIP+"/32", "via", n.deadIP)
	}
}

func (n *netns) restore(kind cutKind) error {
	switch kind {
	case cutLink:
		// Up again, the kernel puts the pair's subnet route back.
		return n.run("-n", n.name, "link", "set", n.nsIf, "up")
	case cutRedisBlackhole:
		return n.run("-n", n.name, "route", "del", "blackhole", n.redisIP+"/32")
	default:
		return n.run("-n", n.name, "route", "del", n.redisIP+"/32", "via", n.deadIP)
	}
}

// remove deletes the namespace, which takes its end of the pair and so the
// pair; the host end is deleted too in case the namespace did not get it.
func (n *netns) remove(t *testing.T) {
	if err := n.run("netns", "del", n.name); err != nil {
		t.Errorf("removing the test's network namespace: %v", err)
	}
	if links, _ := exec.Command(n.ip, "-o", "link", "show", n.hostIf).CombinedOutput(); strings.Contains(string(links), n.hostIf) {
		_ = n.run("link", "del", n.hostIf)
	}
}

// sweepNetns removes what a killed earlier run left behind: namespaces and
// veth ends named after a process that no longer runs. Those of a live
// process (a run in parallel) are left alone.
func sweepNetns(t *testing.T, ip string) {
	t.Helper()
	dead := func(pid string) bool {
		p, err := strconv.Atoi(pid)
		if err != nil || p <= 0 {
			return false
		}
		err = syscall.Kill(p, 0)
		return errors.Is(err, syscall.ESRCH)
	}
	if out, err := exec.Command(ip, "netns", "list").Output(); err == nil {
		for _, line := range strings.Split(string(out), "\n") {
			name, _, _ := strings.Cut(strings.TrimSpace(line), " ")
			if m := netnsName.FindStringSubmatch(name); m != nil && dead(m[1]) {
				if out, err := exec.Command(ip, "netns", "del", name).CombinedOutput(); err != nil {
					t.Logf("removing leftover namespace %s: %v: %s", name, err, out)
				} else {
					t.Logf("removed leftover namespace %s of a run that ended without cleaning up", name)
				}
			}
		}
	}
	if out, err := exec.Command(ip, "-o", "link", "show").Output(); err == nil {
		for _, line := range strings.Split(string(out), "\n") {
			f := strings.Fields(line)
			if len(f) < 2 {
				continue
			}
			name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
			if m := netnsVethEnd.FindStringSubmatch(name); m != nil && dead(m[1]) {
				if out, err := exec.Command(ip, "link", "del", name).CombinedOutput(); err != nil {
					t.Logf("removing leftover link %s: %v: %s", name, err, out)
				} else {
					t.Logf("removed leftover link %s of a run that ended without cleaning up", name)
				}
			}
		}
	}
}

// Each cut makes Redis unreachable from the namespace and nothing else
// (the host reaches it on loopback); the provider's address stays
// reachable unless the link is down; each restore brings both back. And a
// namespace left by a run that was killed is removed.
func TestNetnsCuts(t *testing.T) {
	n := newNetns(t)
	srv := redistest.Start(t)
	rc := srv.Client()
	if err := rc.ConfigSet(context.Background(), "bind", "127.0.0.1 "+n.redisIP).Err(); err != nil {
		t.Fatalf("Redis listening on the pair's host end too: %v", err)
	}
	_, port, _ := strings.Cut(srv.Addr(), ":")
	provider, err := net.Listen("tcp", n.providerIP+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer provider.Close()
	go func() {
		for {
			c, err := provider.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	ping := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
		defer cancel()
		out, err := n.command(ctx, "redis-cli", "-h", n.redisIP, "-p", port, "ping").CombinedOutput()
		if strings.TrimSpace(string(out)) != "PONG" {
			return fmt.Errorf("redis-cli ping from the namespace: %v: %s", err, out)
		}
		return nil
	}
	connect := func() error { // bash's /dev/tcp: a TCP connection, no more
		ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
		defer cancel()
		host, port, _ := net.SplitHostPort(provider.Addr().String())
		if out, err := n.command(ctx, "bash", "-c", `exec 3<>"/dev/tcp/$0/$1"`, host, port).CombinedOutput(); err != nil {
			return fmt.Errorf("connecting to the provider's address from the namespace: %v: %s", err, out)
		}
		return nil
	}
	if err := ping(); err != nil {
		t.Fatal(err)
	}
	if err := connect(); err != nil {
		t.Fatal(err)
	}
	for kind := range cutKind(cutKinds) {
		if err := n.cut(kind); err != nil {
			t.Fatal(err)
		}
		if err := ping(); err == nil {
			t.Errorf("%s: Redis answered the namespace", kind)
		}
		if err := rc.Ping(context.Background()).Err(); err != nil {
			t.Errorf("%s: Redis did not answer on loopback: %v", kind, err)
		}
		if err := connect(); (err == nil) != (kind != cutLink) {
			t.Errorf("%s: provider reachable = %v; want %v", kind, err == nil, kind != cutLink)
		}
		if err := n.restore(kind); err != nil {
			t.Fatal(err)
		}
		if err := ping(); err != nil {
			t.Errorf("after %s was restored: %v", kind, err)
		}
		if err := connect(); err != nil {
			t.Errorf("after %s was restored: %v", kind, err)
		}
	}

	// A namespace named after a process that has ended.
	gone := exec.Command("true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	left := fmt.Sprintf("%s%d-1", netnsPrefix, gone.Process.Pid)
	if err := n.run("netns", "add", left); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.run("netns", "del", left) })
	sweepNetns(t, n.ip)
	if out, _ := exec.Command(n.ip, "netns", "list").Output(); strings.Contains(string(out), left+" ") || strings.Contains(string(out), left+"\n") {
		t.Errorf("leftover namespace %s not removed: %s", left, out)
	}
	if out, _ := exec.Command(n.ip, "netns", "list").Output(); !strings.Contains(string(out), n.name) {
		t.Errorf("the sweep removed the live run's namespace %s: %s", n.name, out)
	}
}
