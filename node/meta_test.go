package node

import (
	"math"
	"strings"
	"testing"

	"github.com/hashicorp/memberlist"
	"github.com/vmihailenco/msgpack/v5"
)

func TestMetaRoundTrip(t *testing.T) {
	in := Meta{ID: "h-1-abc", Endpoint: "10.0.0.1:29500", Device: "cpu", Budget: 1 << 34,
		JobHash: HashJobConfig([]byte("job")), State: StateTraining, Step: 42, StepMillis: 1234, Epoch: 7, Inc: 0x9e3779b97f4a7c15}
	b, err := in.Encode()
	if err != nil {
		t.Fatal(err)
	}
	out, err := DecodeMeta(b)
	if err != nil {
		t.Fatal(err)
	}
	if out != in {
		t.Fatalf("round trip: got %+v, want %+v", out, in)
	}
}

// Every string at its limit (multi-byte runes do not matter: limits are in
// bytes) and every number at its maximum must still fit memberlist's limit.
func TestMetaWorstCaseFits(t *testing.T) {
	m := Meta{
		ID:         strings.Repeat("i", MaxIDLen),
		Endpoint:   strings.Repeat("e", MaxEndpointLen),
		Device:     strings.Repeat("d", MaxDeviceLen),
		Budget:     math.MaxUint64,
		JobHash:    strings.Repeat("f", MaxJobHashLen),
		State:      State(math.MaxUint8),
		Step:       math.MaxUint64,
		StepMillis: math.MaxUint32,
		Epoch:      math.MaxUint64,
		Inc:        math.MaxUint64,
		Done:       true,
		NCCL:       true,
	}
	b, err := m.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > memberlist.MetaMaxSize {
		t.Fatalf("worst case is %d bytes > %d", len(b), memberlist.MetaMaxSize)
	}
	t.Logf("worst-case meta: %d of %d bytes", len(b), memberlist.MetaMaxSize)
}

func TestMetaRejectsOversizedFields(t *testing.T) {
	base := Meta{ID: "n"}
	for name, mut := range map[string]func(*Meta){
		"empty id": func(m *Meta) { m.ID = "" },
		"id":       func(m *Meta) { m.ID = strings.Repeat("i", MaxIDLen+1) },
		"endpoint": func(m *Meta) { m.Endpoint = strings.Repeat("e", MaxEndpointLen+1) },
		"device":   func(m *Meta) { m.Device = strings.Repeat("d", MaxDeviceLen+1) },
		"jobhash":  func(m *Meta) { m.JobHash = strings.Repeat("f", MaxJobHashLen+1) },
	} {
		m := base
		mut(&m)
		if _, err := m.Encode(); err == nil {
			t.Errorf("%s: encode accepted an oversized field", name)
		}
	}
}

func TestDecodeMetaErrors(t *testing.T) {
	if _, err := DecodeMeta(nil); err == nil {
		t.Error("empty meta decoded")
	}
	if _, err := DecodeMeta([]byte{0xc1}); err == nil { // 0xc1 is never valid msgpack
		t.Error("garbage decoded")
	}
	if _, err := DecodeMeta(make([]byte, memberlist.MetaMaxSize+1)); err == nil {
		t.Error("oversized meta decoded")
	}
}

// A newer peer's extra keys are skipped, not an error.
func TestDecodeMetaIgnoresUnknownKeys(t *testing.T) {
	type future struct {
		Meta  `msgpack:",inline"`
		Extra string `msgpack:"zz"`
	}
	b, err := msgpack.Marshal(future{Meta: Meta{ID: "a", State: StateReady}, Extra: "x"})
	if err != nil {
		t.Fatal(err)
	}
	m, err := DecodeMeta(b)
	if err != nil {
		t.Fatal(err)
	}
	if m.ID != "a" || m.State != StateReady {
		t.Fatalf("got %+v", m)
	}
}
