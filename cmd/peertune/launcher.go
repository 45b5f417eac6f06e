package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/peertune/peertune/node"
)

// killGrace is how long the launcher waits after SIGTERM (Ctrl-C, or a failed
// peer) before it kills the remaining children.
const killGrace = 10 * time.Second

// freePort asks the kernel for a loopback port that is free for both TCP and
// UDP (memberlist uses both on one port).
func freePort() (int, error) {
	for tries := 0; tries < 20; tries++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		l.Close()
		if err == nil {
			u.Close()
			return port, nil
		}
	}
	return 0, errors.New("no free loopback port for TCP and UDP")
}

// withoutFlag removes "--name V", "--name=V" from args.
func withoutFlag(args []string, name string) []string {
	var out []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--"+name {
			i++
			continue
		}
		if strings.HasPrefix(a, "--"+name+"=") {
			continue
		}
		out = append(out, a)
	}
	return out
}

// runLocalCluster starts n peer processes of this binary on loopback, as
// torchrun's --nproc-per-node does: each is a real process with its own
// memberlist and ring ports, joined through the first one. Their log lines
// come out prefixed with their rank; only rank 0 prints results to stdout and
// writes --out. It returns an error if any process fails, and stops them all
// on ctx cancellation (Ctrl-C).
func runLocalCluster(ctx context.Context, n int, args []string, stdout, stderr io.Writer) error {
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("--nodes: find this binary: %w", err)
	}
	env := os.Environ()
	if os.Getenv(node.SecretEnv) == "" && !containsFlag(args, "secret-file") {
		// Local peers share a fresh random secret: nothing else on this host
		// can join their gossip or their ring.
		b := make([]byte, 32)
		rand.Read(b)
		env = append(env, node.SecretEnv+"="+hex.EncodeToString(b))
	}
	base := withoutFlag(args, "nodes")
	for _, f := range []string{"join", "bind", "advertise", "world-size", "min-nodes", "node-name"} {
		if containsFlag(base, f) {
			return fmt.Errorf("--nodes starts local peers itself; do not combine it with --%s", f)
		}
	}
	ports := make([]int, n)
	for i := range ports {
		if ports[i], err = freePort(); err != nil {
			return err
		}
	}
	procs := make([]*exec.Cmd, n)
	var out sync.Mutex // one line at a time from all children
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		a := append([]string(nil), base...)
		a = append(a, "--node-name", fmt.Sprintf("local-%03d-%d", i, os.Getpid()),
			"--bind", fmt.Sprintf("127.0.0.1:%d", ports[i]),
			"--world-size", strconv.Itoa(n), "--min-nodes", strconv.Itoa(n))
		if i > 0 {
			a = append(a, "--join", fmt.Sprintf("127.0.0.1:%d", ports[0]))
		}
		cmd := exec.Command(self, a...)
		cmd.Env = env
		// Names sort in start order, so process i becomes rank i.
		prefix := fmt.Sprintf("[rank %d] ", i)
		errPipe, err := cmd.StderrPipe()
		if err != nil {
			return err
		}
		outPipe, err := cmd.StdoutPipe()
		if err != nil {
			return err
		}
		if err := cmd.Start(); err != nil {
			stopAll(procs[:i])
			return fmt.Errorf("start peer %d: %w", i, err)
		}
		procs[i] = cmd
		wg.Add(2)
		go copyLines(&wg, &out, stderr, errPipe, prefix)
		go copyLines(&wg, &out, stdout, outPipe, "")
	}
	type exit struct {
		rank int
		err  error
	}
	exits := make(chan exit, n)
	for i, p := range procs {
		go func() { exits <- exit{i, p.Wait()} }()
	}
	var firstErr error
	stopping := false
	var grace <-chan time.Time
	for remaining := n; remaining > 0; {
		select {
		case e := <-exits:
			remaining--
			if e.err != nil && firstErr == nil && !stopping {
				firstErr = fmt.Errorf("peer %d failed: %w", e.rank, e.err)
			}
			if e.err != nil && !stopping {
				stopping = true
				signalAll(procs, syscall.SIGTERM)
				grace = time.After(killGrace)
			}
		case <-ctx.Done():
			if !stopping {
				stopping = true
				firstErr = ctx.Err()
				signalAll(procs, syscall.SIGTERM)
				grace = time.After(killGrace)
			}
		case <-grace:
			signalAll(procs, syscall.SIGKILL)
		}
	}
	wg.Wait()
	return firstErr
}

func containsFlag(args []string, name string) bool {
	for _, a := range args {
		if a == "--"+name || strings.HasPrefix(a, "--"+name+"=") {
			return true
		}
	}
	return false
}

func signalAll(procs []*exec.Cmd, sig syscall.Signal) {
	for _, p := range procs {
		if p != nil && p.Process != nil {
			p.Process.Signal(sig) // an already exited child just returns an error
		}
	}
}

func stopAll(procs []*exec.Cmd) {
	signalAll(procs, syscall.SIGKILL)
	for _, p := range procs {
		p.Wait()
	}
}

func copyLines(wg *sync.WaitGroup, mu *sync.Mutex, w io.Writer, r io.Reader, prefix string) {
	defer wg.Done()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		mu.Lock()
		fmt.Fprintf(w, "%s%s\n", prefix, sc.Text())
		mu.Unlock()
	}
}
