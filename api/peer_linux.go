package api

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// soPeerPidfd is SO_PEERPIDFD (Linux 6.5): a pidfd for the very process
// that connected, with no window for its pid to be reused. Its number is
// the generic one, which amd64 and arm64 use.
const soPeerPidfd = 77

// peerOf asks the kernel who is at the other end of c.
func peerOf(c *net.UnixConn) *Peer {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil
	}
	var p *Peer
	_ = rc.Control(func(fd uintptr) {
		cred, err := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
		if err != nil {
			return
		}
		p = &Peer{UID: cred.Uid, GID: cred.Gid, PID: cred.Pid, pidfd: -1}
		if runtime.GOARCH == "amd64" || runtime.GOARCH == "arm64" {
			if pfd, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, soPeerPidfd); err == nil {
				p.pidfd = pfd
				return
			}
		}
		// Older kernels: open a pidfd now. The pid could in theory have
		// been reused between connect and here; readProc also checks the
		// process's uid against the kernel's record.
		if pfd, err := unix.PidfdOpen(int(cred.Pid), 0); err == nil {
			p.pidfd = pfd
		}
	})
	return p
}

// readProc reads the caller's supplementary groups and executable from
// /proc, and trusts them only when the pidfd shows that the process read is
// still the one that connected (as SPIRE does: a pid can be reused, a pidfd
// cannot).
func (p *Peer) readProc() {
	if p.pidfd < 0 || p.PID <= 0 {
		return
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.PID))
	if err != nil {
		return
	}
	exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", p.PID))
	// Signal 0 checks that the pinned process is alive, so the pid was
	// not reused while we read.
	if unix.PidfdSendSignal(p.pidfd, 0, nil, 0) != nil {
		return
	}
	groups, uid, ok := parseStatus(status)
	if !ok || uid != p.UID {
		return
	}
	p.groups, p.exe, p.procOK = groups, exe, true
}

// parseStatus reads the real uid and the supplementary groups from a
// /proc/PID/status file.
func parseStatus(b []byte) (groups []uint32, uid uint32, ok bool) {
	var haveUID, haveGroups bool
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, found := strings.Cut(sc.Text(), ":")
		if !found {
			continue
		}
		switch k {
		case "Uid":
			f := strings.Fields(v)
			if len(f) == 0 {
				return nil, 0, false
			}
			n, err := strconv.ParseUint(f[0], 10, 32)
			if err != nil {
				return nil, 0, false
			}
			uid, haveUID = uint32(n), true
		case "Groups":
			for _, f := range strings.Fields(v) {
				n, err := strconv.ParseUint(f, 10, 32)
				if err != nil {
					return nil, 0, false
				}
				groups = append(groups, uint32(n))
			}
			haveGroups = true
		}
	}
	return groups, uid, haveUID && haveGroups
}

func (p *Peer) close() {
	if p.pidfd >= 0 {
		_ = unix.Close(p.pidfd)
		p.pidfd = -1
	}
}
