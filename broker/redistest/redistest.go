// Package redistest starts real redis-server processes for tests: each on
// its own loopback port and temp dir, without persistence, so a test can
// kill, pause, flush and restart it. It never touches a system Redis.
package redistest

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Server is one redis-server process owned by a test.
type Server struct {
	t     testing.TB
	port  int
	dir   string
	cmd   *exec.Cmd
	done  chan struct{}
	extra []string
	tls   bool // TLS only: readiness is a handshake, not a PING
}

// Start runs a redis-server and waits until it answers PING. The test's
// cleanup kills it.
func Start(t testing.TB) *Server {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatalf("redis-server not found: run the README test command (bash .ci/test), which installs it")
	}
	s := &Server{t: t, dir: t.TempDir()}
	// The port is free when picked and may be taken before redis-server
	// binds it (tests run in parallel): then try another.
	for attempt := 1; ; attempt++ {
		s.port = freePort(t)
		err := s.tryLaunch()
		if err == nil {
			break
		}
		if attempt == 3 {
			t.Fatal(err)
		}
	}
	t.Cleanup(s.Kill)
	return s
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func (s *Server) launch() {
	s.t.Helper()
	if err := s.tryLaunch(); err != nil {
		s.t.Fatal(err)
	}
}

// tryLaunch starts redis-server on s.port and waits until it answers. The
// answer must come from this server (its own dir), not from another test's
// that holds the port.
func (s *Server) tryLaunch() error {
	port := strconv.Itoa(s.port)
	if s.tls {
		port = "0"
	}
	args := []string{"--port", port, "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", s.dir, "--protected-mode", "no", "--loglevel", "warning"}
	sentinel := len(s.extra) > 0 && s.extra[0] == "--sentinel-conf"
	ownDir, err := filepath.EvalSymlinks(s.dir) // as redis-server's getcwd reports it
	if err != nil {
		return err
	}
	if sentinel {
		// A sentinel takes its config file first and rewrites it.
		args = append([]string{s.extra[1], "--sentinel"}, args[:4]...)
	} else {
		args = append(args, s.extra...)
	}
	s.cmd = exec.Command("redis-server", args...)
	if err := s.cmd.Start(); err != nil {
		return fmt.Errorf("starting redis-server: %v", err)
	}
	s.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { _ = cmd.Wait(); close(done) }(s.cmd, s.done)
	c := redis.NewClient(&redis.Options{Addr: s.Addr(), MaxRetries: -1})
	defer c.Close()
	ready := func() bool {
		if s.tls {
			return tlsReady(s.Addr())
		}
		if sentinel { // no CONFIG; its port is not shared with a test's server
			return c.Ping(context.Background()).Err() == nil
		}
		dir, err := c.ConfigGet(context.Background(), "dir").Result()
		return err == nil && dir["dir"] == ownDir
	}
	deadline := time.Now().Add(10 * time.Second)
	for !ready() {
		select {
		case <-s.done:
			return fmt.Errorf("redis-server on port %d exited at start", s.port)
		default:
		}
		if time.Now().After(deadline) {
			s.Kill()
			return fmt.Errorf("redis-server on port %d did not answer within 10s", s.port)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}

// Addr is host:port.
func (s *Server) Addr() string { return fmt.Sprintf("127.0.0.1:%d", s.port) }

// URL is a redis:// URL for the server.
func (s *Server) URL() string { return "redis://" + s.Addr() }

// Client returns a new client, closed at the test's end.
func (s *Server) Client() *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: s.Addr()})
	s.t.Cleanup(func() { c.Close() })
	return c
}

// Kill ends the server with SIGKILL and waits for it.
func (s *Server) Kill() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	select {
	case <-s.done:
		return
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGCONT) // a paused server must die too
	_ = s.cmd.Process.Kill()
	<-s.done
}

// Restart kills the server and starts an empty one on the same port.
func (s *Server) Restart() {
	s.t.Helper()
	s.Kill()
	s.launch()
}

// Pause stops the process (SIGSTOP): connections stay open, nothing answers.
func (s *Server) Pause() { _ = s.cmd.Process.Signal(syscall.SIGSTOP) }

// Resume continues a paused server.
func (s *Server) Resume() { _ = s.cmd.Process.Signal(syscall.SIGCONT) }

// Flush deletes every key.
func (s *Server) Flush() {
	s.t.Helper()
	c := redis.NewClient(&redis.Options{Addr: s.Addr()})
	defer c.Close()
	if err := c.FlushAll(context.Background()).Err(); err != nil {
		s.t.Fatalf("FLUSHALL: %v", err)
	}
}
