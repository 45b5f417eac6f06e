package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/peertune/peertune/collective"
	"github.com/peertune/peertune/collective/ring"
	"github.com/peertune/peertune/node"
)

// parseSize reads "32MiB", "1GiB", "4096" (bytes).
func parseSize(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3}, {"B", 1}}
	mult := int64(1)
	num := strings.TrimSpace(s)
	for _, u := range units {
		if strings.HasSuffix(num, u.suffix) {
			mult, num = u.mult, strings.TrimSpace(strings.TrimSuffix(num, u.suffix))
			break
		}
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || v <= 0 {
		return 0, fmt.Errorf("size %q: want a positive number with an optional unit (KiB, MiB, GiB, KB, MB, GB)", s)
	}
	return int64(v * float64(mult)), nil
}

func newBenchAllReduceCmd(g *globalOptions) *cobra.Command {
	var nodes, iters int
	var size string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "allreduce",
		Short: "Time the TCP ring all-reduce across local peer processes",
		Long: `Starts --nodes real processes on loopback that form an authenticated TCP ring
and all-reduce a float32 buffer of --size, then measures, in the same run, the
TCP throughput between two processes on loopback: the limit the ring works
against. algbw = bytes / time; busbw = algbw · 2(N-1)/N (NCCL's definition:
the bytes each rank moves). Figures in GB/s (10^9 bytes).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			bytesN, err := parseSize(size)
			if err != nil {
				return fmt.Errorf("--size: %w", err)
			}
			if nodes < 2 || iters < 1 {
				return fmt.Errorf("--nodes must be at least 2 and --iters at least 1")
			}
			res, err := benchAllReduceProcs(cmd.Context(), nodes, bytesN, iters)
			if err != nil {
				return err
			}
			tcp, err := loopbackTCPProcs(cmd.Context(), max(bytesN, 256<<20))
			if err != nil {
				return err
			}
			out := map[string]any{"ranks": res.Ranks, "bytes": res.Bytes, "seconds": round(res.Seconds, 5),
				"algbw_gbps": round(res.AlgBWGBps, 3), "busbw_gbps": round(res.BusBWGBps, 3),
				"loopback_tcp_gbps": round(tcp, 3), "busbw_vs_loopback": round(res.BusBWGBps/tcp, 3)}
			return printResult(cmd.OutOrStdout(), asJSON, out, fmt.Sprintf(
				"%d ranks × %d bytes: %.4fs, algbw %.2f GB/s, busbw %.2f GB/s; loopback TCP between two processes %.2f GB/s",
				res.Ranks, res.Bytes, res.Seconds, res.AlgBWGBps, res.BusBWGBps, tcp))
		},
	}
	f := cmd.Flags()
	f.IntVar(&nodes, "nodes", 4, "peer processes")
	f.StringVar(&size, "size", "32MiB", "buffer size")
	f.IntVar(&iters, "iters", 5, "timed all-reduces (after one warm-up)")
	f.BoolVar(&asJSON, "json", false, "print one JSON line")
	return cmd
}

// benchAllReduceProcs runs the ring across n child processes.
func benchAllReduceProcs(ctx context.Context, n int, bytesN int64, iters int) (ring.BenchResult, error) {
	self, err := os.Executable()
	if err != nil {
		return ring.BenchResult{}, err
	}
	peers := make([]string, n)
	for i := range peers {
		p, err := freePort()
		if err != nil {
			return ring.BenchResult{}, err
		}
		peers[i] = fmt.Sprintf("127.0.0.1:%d", p)
	}
	secret := make([]byte, 32)
	rand.Read(secret)
	env := append(os.Environ(), node.SecretEnv+"="+hex.EncodeToString(secret))
	procs := make([]*exec.Cmd, n)
	outs := make([]*bytes.Buffer, n)
	for i := range procs {
		c := exec.CommandContext(ctx, self, "bench", "allreduce-worker", "--rank", strconv.Itoa(i),
			"--peers", strings.Join(peers, ","), "--bytes", strconv.FormatInt(bytesN, 10), "--iters", strconv.Itoa(iters))
		c.Env = env
		outs[i] = &bytes.Buffer{}
		c.Stdout, c.Stderr = outs[i], outs[i]
		if err := c.Start(); err != nil {
			stopAll(procs[:i])
			return ring.BenchResult{}, err
		}
		procs[i] = c
	}
	var firstErr error
	for i, c := range procs {
		if err := c.Wait(); err != nil && firstErr == nil {
			firstErr = fmt.Errorf("bench rank %d: %w\n%s", i, err, outs[i].String())
		}
	}
	if firstErr != nil {
		return ring.BenchResult{}, firstErr
	}
	var res ring.BenchResult
	sc := bufio.NewScanner(outs[0])
	for sc.Scan() {
		if json.Unmarshal(sc.Bytes(), &res) == nil && res.Ranks > 0 {
			return res, nil
		}
	}
	return res, fmt.Errorf("bench rank 0 printed no result:\n%s", outs[0].String())
}

// newBenchWorkerCmd is one rank of `bench allreduce` (hidden).
func newBenchWorkerCmd(g *globalOptions) *cobra.Command {
	var rank, iters int
	var peers string
	var bytesN int64
	cmd := &cobra.Command{
		Use:    "allreduce-worker",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			secret, err := node.ReadSecret("", os.Getenv)
			if err != nil {
				return err
			}
			cfg := ring.DefaultConfig()
			cfg.Peers = strings.Split(peers, ",")
			cfg.Rank, cfg.Size, cfg.Epoch, cfg.Secret = rank, len(cfg.Peers), 1, secret
			comm, err := ring.New(ctx, cfg, g.log)
			if err != nil {
				return err
			}
			defer comm.Close()
			buf := make([]float32, bytesN/4)
			for i := range buf {
				buf[i] = float32(i%1000) * 1e-3
			}
			if err := comm.AllReduceFloat32(ctx, buf, collective.Sum); err != nil { // warm-up, and every rank is there
				return err
			}
			start := time.Now()
			for i := 0; i < iters; i++ {
				if err := comm.AllReduceFloat32(ctx, buf, collective.Sum); err != nil {
					return err
				}
			}
			res := ring.BenchResult{Ranks: cfg.Size, Bytes: int64(len(buf)) * 4, Seconds: time.Since(start).Seconds() / float64(iters)}
			res.Bandwidth()
			if rank == 0 {
				raw, _ := json.Marshal(res)
				fmt.Fprintln(cmd.OutOrStdout(), string(raw))
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVar(&rank, "rank", 0, "")
	f.IntVar(&iters, "iters", 5, "")
	f.StringVar(&peers, "peers", "", "")
	f.Int64Var(&bytesN, "bytes", 32<<20, "")
	return cmd
}

// loopbackTCPProcs measures one TCP stream between this process and a child
// process on loopback, in GB/s.
func loopbackTCPProcs(ctx context.Context, bytesN int64) (float64, error) {
	self, err := os.Executable()
	if err != nil {
		return 0, err
	}
	port, err := freePort()
	if err != nil {
		return 0, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	c := exec.CommandContext(ctx, self, "bench", "tcp-sink", "--listen", addr)
	var errOut bytes.Buffer
	c.Stderr = &errOut
	if err := c.Start(); err != nil {
		return 0, err
	}
	defer c.Wait()
	var conn net.Conn
	for tries := 0; ; tries++ {
		if conn, err = net.Dial("tcp", addr); err == nil {
			break
		}
		if tries > 100 {
			c.Process.Kill()
			return 0, fmt.Errorf("tcp sink did not start: %v\n%s", err, errOut.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	defer conn.Close()
	chunk := make([]byte, 1<<20)
	start := time.Now()
	for sent := int64(0); sent < bytesN; sent += int64(len(chunk)) {
		if _, err := conn.Write(chunk); err != nil {
			return 0, err
		}
	}
	conn.(*net.TCPConn).CloseWrite()
	var got [8]byte
	if _, err := io.ReadFull(conn, got[:]); err != nil {
		return 0, fmt.Errorf("tcp sink: %w", err)
	}
	el := time.Since(start).Seconds()
	return float64(binary.LittleEndian.Uint64(got[:])) / el / 1e9, nil
}

// newTCPSinkCmd reads one connection to EOF and answers with the byte count (hidden).
func newTCPSinkCmd() *cobra.Command {
	var listen string
	cmd := &cobra.Command{
		Use:    "tcp-sink",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return err
			}
			defer ln.Close()
			ln.(*net.TCPListener).SetDeadline(time.Now().Add(30 * time.Second))
			conn, err := ln.Accept()
			if err != nil {
				return err
			}
			defer conn.Close()
			n, err := io.CopyBuffer(io.Discard, conn, make([]byte, 1<<20))
			if err != nil {
				return err
			}
			var b [8]byte
			binary.LittleEndian.PutUint64(b[:], uint64(n))
			_, err = conn.Write(b[:])
			return err
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:0", "")
	return cmd
}
