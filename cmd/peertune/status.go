package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/peertune/peertune/node"
	"github.com/peertune/peertune/node/gpu"
)

// statusOptions are the flags of `peertune status`.
type statusOptions struct {
	join       string        // --join host:port[,host:port]: any node(s) of the cluster
	secretFile string        // --secret-file (or PEERTUNE_SECRET)
	bind       string        // --bind ip:port; empty: the local address that routes to the first seed, a free port
	advertise  string        // --advertise ip:port, when --bind is a wildcard or behind NAT
	wait       time.Duration // --wait: how long to listen to gossip before printing
	timeout    time.Duration // --timeout: how long to keep trying the seeds
	json       bool          // --json: one JSON object per node per line
}

func newStatusCmd(g *globalOptions) *cobra.Command {
	o := statusOptions{}
	cmd := &cobra.Command{
		Use:   "status --join host:port[,host:port]",
		Short: "Print the cluster: nodes, states, epochs, steps, step times, stragglers",
		Long: `Joins the cluster's gossip as an observer (a node that rendezvous never counts
and that never trains), listens for --wait so that every node's latest metadata
arrives, prints one row per node, and leaves. Stragglers are marked by the rule
training nodes log them with: two or more steps behind the furthest node, or a
last step that took over three times the median.

The job's secret is needed (--secret-file or PEERTUNE_SECRET): gossip is
encrypted, and a wrong secret is reported as such.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runStatus(cmd.Context(), g.log, o, cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.join, "join", "", "host:port[,host:port] of nodes of the cluster (their gossip addresses)")
	f.StringVar(&o.secretFile, "secret-file", "", "file with the job secret (or set "+node.SecretEnv+")")
	f.StringVar(&o.bind, "bind", "", "ip:port for this observer's gossip (default: the local address that reaches the first --join node, a free port)")
	f.StringVar(&o.advertise, "advertise", "", "ip:port the cluster should dial to reach this observer (with a wildcard --bind, or behind NAT)")
	f.DurationVar(&o.wait, "wait", 1500*time.Millisecond, "how long to listen to gossip before printing (metadata converges in about a second)")
	f.DurationVar(&o.timeout, "timeout", 10*time.Second, "how long to keep trying the --join nodes")
	f.BoolVar(&o.json, "json", false, "print one JSON object per node per line")
	return cmd
}

// statusRow is one node as `peertune status` prints it.
type statusRow struct {
	ID         string `json:"id"`
	State      string `json:"state"`
	Epoch      uint64 `json:"epoch"`
	Step       uint64 `json:"step"`
	StepMillis uint32 `json:"step_ms"`
	Device     string `json:"device"`
	Budget     uint64 `json:"budget_bytes"`
	Endpoint   string `json:"endpoint"`
	Gossip     string `json:"gossip"`
	Alive      bool   `json:"alive"`
	JobHash    string `json:"job_hash"`
	Straggler  bool   `json:"straggler"`
	Why        string `json:"straggler_why,omitempty"`
}

// runStatus joins the cluster as an observer, waits o.wait for gossip, writes
// the cluster to out and leaves. Logs go to log (stderr), the table to out.
func runStatus(ctx context.Context, log *zap.Logger, o statusOptions, out io.Writer) error {
	if log == nil {
		log = zap.NewNop()
	}
	seeds := splitSeeds(o.join)
	if len(seeds) == 0 {
		return errors.New("status: --join host:port is required (the gossip address of any node of the cluster)")
	}
	if o.timeout <= 0 {
		return fmt.Errorf("status: --timeout %s must be positive", o.timeout)
	}
	secret, err := node.ReadSecret(o.secretFile, os.Getenv)
	if err != nil {
		return fmt.Errorf("status: %w", err)
	}
	cfg := node.DefaultConfig()
	cfg.Name = "status-" + node.DefaultName()
	cfg.Observer = true
	cfg.Seeds = seeds
	cfg.SecretKey = node.DeriveKey(secret)
	cfg.JoinTimeout = o.timeout
	if o.bind == "" {
		ip, err := routeTo(seeds[0])
		if err != nil {
			return fmt.Errorf("status: %w (pass --bind ip:port)", err)
		}
		cfg.BindAddr, cfg.BindPort = ip, 0
	} else if cfg.BindAddr, cfg.BindPort, err = splitHostPort("bind", o.bind); err != nil {
		return fmt.Errorf("status: %w", err)
	}
	if o.advertise != "" {
		if cfg.AdvertiseAddr, cfg.AdvertisePort, err = splitHostPort("advertise", o.advertise); err != nil {
			return fmt.Errorf("status: %w", err)
		}
	}
	// The node's own Info lines (gossip started, joined) are noise here;
	// failures come back as errors. --log-level debug still shows them.
	nlog := log.Named("node")
	if !log.Core().Enabled(zapcore.DebugLevel) {
		nlog = nlog.WithOptions(zap.IncreaseLevel(zapcore.WarnLevel))
	}
	n, err := node.Start(ctx, cfg, nlog)
	if err != nil {
		if errors.Is(err, node.ErrGossipKey) {
			return fmt.Errorf("status: the cluster at %s did not accept our gossip key: is --secret-file / %s the job's secret? (%w)", o.join, node.SecretEnv, err)
		}
		return fmt.Errorf("status: cannot reach the cluster at %s: %w", o.join, err)
	}
	defer func() {
		if err := n.Leave(time.Second); err != nil {
			log.Debug("leave", zap.Error(err))
		}
		n.Shutdown()
	}()

	// Nodes that go away while we listen are printed as not alive.
	var mu sync.Mutex
	gone := map[string]node.Member{}
	go func() { // ends when Shutdown closes Events
		for ev := range n.Events() {
			mu.Lock()
			if ev.Kind == node.EventLeave {
				gone[ev.Member.ID] = ev.Member
			} else {
				delete(gone, ev.Member.ID)
			}
			mu.Unlock()
		}
	}()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(o.wait):
	}
	members := n.Members()
	mu.Lock()
	for _, m := range gone {
		if !slices.ContainsFunc(members, func(x node.Member) bool { return x.ID == m.ID }) {
			members = append(members, m)
		}
	}
	mu.Unlock()
	rows := statusRows(members)
	if o.json {
		return writeStatusJSON(out, rows)
	}
	return writeStatusTable(out, rows)
}

// statusRows turns members into rows, observers left out, in ID order, with
// stragglers marked by stragglers(), the rule training nodes log them with,
// applied to each job (config hash) on its own.
func statusRows(members []node.Member) []statusRow {
	why := map[string]string{}
	var hashes []string
	for _, m := range members {
		if !slices.Contains(hashes, m.Meta.JobHash) {
			hashes = append(hashes, m.Meta.JobHash)
		}
	}
	for _, h := range hashes {
		for _, s := range stragglers(members, h) {
			why[s.id] = s.why
		}
	}
	var rows []statusRow
	for _, m := range members {
		if m.Meta.State == node.StateObserver {
			continue
		}
		w, isStraggler := why[m.ID]
		rows = append(rows, statusRow{
			ID: m.ID, State: m.Meta.State.String(), Epoch: m.Meta.Epoch, Step: m.Meta.Step, StepMillis: m.Meta.StepMillis,
			Device: m.Meta.Device, Budget: m.Meta.Budget, Endpoint: m.Meta.Endpoint, Gossip: m.Addr,
			Alive: m.Alive, JobHash: m.Meta.JobHash, Straggler: isStraggler, Why: w,
		})
	}
	slices.SortFunc(rows, func(a, b statusRow) int { return cmp.Compare(a.ID, b.ID) })
	return rows
}

func writeStatusJSON(out io.Writer, rows []statusRow) error {
	enc := json.NewEncoder(out)
	for _, r := range rows {
		if err := enc.Encode(r); err != nil {
			return err
		}
	}
	return nil
}

func writeStatusTable(out io.Writer, rows []statusRow) error {
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tSTATE\tEPOCH\tSTEP\tSTEP_MS\tDEVICE\tBUDGET\tENDPOINT\tALIVE\tSTRAGGLER")
	dash := func(s string) string { return cmp.Or(s, "-") }
	states := map[string]int{}
	slow := 0
	for _, r := range rows {
		budget := "-"
		if r.Budget > 0 {
			budget = gpu.FormatBytes(r.Budget)
		}
		alive := "yes"
		if !r.Alive {
			alive = "no"
		}
		strag := "-"
		if r.Straggler {
			strag, slow = "STRAGGLER: "+r.Why, slow+1
		}
		epoch, step, ms := "-", "-", "-"
		if r.Epoch > 0 {
			epoch = strconv.FormatUint(r.Epoch, 10)
		}
		if r.State == node.StateTraining.String() || r.Step > 0 {
			step, ms = strconv.FormatUint(r.Step, 10), strconv.FormatUint(uint64(r.StepMillis), 10)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.State, epoch, step, ms, dash(r.Device), budget, dash(r.Endpoint), alive, strag)
		states[r.State]++
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	var parts []string
	for _, st := range []node.State{node.StateTraining, node.StateReady, node.StateJoining, node.StateLeaving} {
		if k := states[st.String()]; k > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", k, st))
			delete(states, st.String())
		}
	}
	for st, k := range states {
		parts = append(parts, fmt.Sprintf("%d %s", k, st))
	}
	summary := fmt.Sprintf("%d nodes", len(rows))
	if len(parts) > 0 {
		summary += ": " + strings.Join(parts, ", ")
	}
	if slow > 0 {
		summary += fmt.Sprintf("; %d straggler(s)", slow)
	}
	_, err := fmt.Fprintln(out, summary)
	return err
}

func splitSeeds(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// routeTo returns the local IP address the kernel would use to reach seed
// (host:port): the observer must bind where the cluster can reach it back,
// or its probes fail and its peers log it as dead. A UDP "dial" sends
// nothing; it only asks the routing table.
func routeTo(seed string) (string, error) {
	host, port, err := net.SplitHostPort(seed)
	if err != nil {
		return "", fmt.Errorf("--join %q: want host:port: %w", seed, err)
	}
	c, err := net.Dial("udp", net.JoinHostPort(host, port))
	if err != nil {
		return "", fmt.Errorf("no route to %s: %w", seed, err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).IP.String(), nil
}
