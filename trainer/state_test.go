package trainer

import (
	"context"
	"math"
	"sync"
	"testing"

	"go.uber.org/zap"

	"github.com/peertune/peertune/collective/ring"
)

func TestStateEncodeRoundTrip(t *testing.T) {
	st := RunState{Step: 123456789, FinalLoss: 1.2345678901234, BestVal: math.Inf(1), BestStep: 77, SinceBest: 2, Stopped: true,
		Baseline: Baseline{Done: true, ValLoss: 3.3, ExactMatch: 0.125, FormatAcc: 0.5, Scored: 200}}
	got, hasBest := decodeState(st.encode(true))
	if got != st || !hasBest {
		t.Fatalf("round trip: %+v, %v\nwant %+v", got, hasBest, st)
	}
}

// TestSyncStateAdoptsMostAdvanced: in a new world, every rank ends up with the
// parameters, moments and progress of the rank that completed the most steps,
// whatever its rank (here rank 1, as after a joiner took rank 0).
func TestSyncStateAdoptsMostAdvanced(t *testing.T) {
	path := writeJSONL(t, 120)
	trs := make([]*Trainer, 3)
	for i := range trs {
		cfg := testConfig(t, path)
		cfg.EvalEvery = 1
		cfg.ValFraction = 0.2
		trs[i] = newTestTrainer(t, cfg)
	}
	// Rank 1 is ahead by three steps and has a best snapshot.
	if _, err := trs[1].Run(context.Background(), Hooks{}); err != nil {
		t.Fatal(err)
	}
	want := params(t, trs[1])
	wantState := trs[1].State()
	comms, err := ring.NewLoopback(context.Background(), 3, ring.DefaultConfig(), zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		for _, c := range comms {
			c.Close()
		}
	}()
	roots := make([]int, 3)
	errs := make([]error, 3)
	var wg sync.WaitGroup
	for i, tr := range trs {
		tr.SetComm(comms[i])
		wg.Add(1)
		go func() {
			defer wg.Done()
			roots[i], errs[i] = tr.SyncState(context.Background())
		}()
	}
	wg.Wait()
	for i, tr := range trs {
		if errs[i] != nil {
			t.Fatalf("rank %d: %v", i, errs[i])
		}
		if roots[i] != 1 {
			t.Fatalf("rank %d chose root %d, want 1", i, roots[i])
		}
		if tr.State() != wantState {
			t.Fatalf("rank %d state %+v, want %+v", i, tr.State(), wantState)
		}
		got := params(t, tr)
		for j := range want {
			if got[j] != want[j] {
				t.Fatalf("rank %d parameter %d differs", i, j)
			}
		}
		if len(tr.Best()) != len(want) {
			t.Fatalf("rank %d did not receive the best snapshot", i)
		}
	}
}
