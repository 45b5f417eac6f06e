package data

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func parse(t *testing.T, text string, opts ReadOptions) ([]Example, ReadStats, error) {
	t.Helper()
	return ParseJSONL(strings.NewReader(text), "data.jsonl", opts)
}

func TestParseFormatsAndTemplates(t *testing.T) {
	tests := []struct {
		name       string
		line       string
		format     string
		wantFormat string
		prompt     string
		response   string
	}{
		{
			name:       "instruction (seed)",
			line:       `{"instruction": "Compute the SNR for received power -80 dBm and noise -100 dBm", "response": "SNR = P_rx - N = -80 - (-100) = 20 dB"}`,
			wantFormat: FormatInstruction,
			prompt:     "### Instruction:\nCompute the SNR for received power -80 dBm and noise -100 dBm\n\n### Response:\n",
			response:   "SNR = P_rx - N = -80 - (-100) = 20 dB",
		},
		{
			name:       "alpaca with input",
			line:       `{"instruction": "Convert to mW.", "input": "20 dBm", "output": "100 mW"}`,
			wantFormat: FormatAlpaca,
			prompt:     "### Instruction:\nConvert to mW.\n\n### Input:\n20 dBm\n\n### Response:\n",
			response:   "100 mW",
		},
		{
			name:       "alpaca empty input",
			line:       `{"instruction": "Say hi.", "input": "", "output": "hi", "text": "ignored"}`,
			wantFormat: FormatAlpaca,
			prompt:     "### Instruction:\nSay hi.\n\n### Response:\n",
			response:   "hi",
		},
		{
			name: "chat multi-turn",
			line: `{"messages": [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "2+2?"},` +
				` {"role": "assistant", "content": "4"}, {"role": "user", "content": "3+3?"}, {"role": "assistant", "content": "6"}]}`,
			wantFormat: FormatChat,
			prompt:     "<|system|>\nBe terse.\n<|user|>\n2+2?\n<|assistant|>\n4\n<|user|>\n3+3?\n<|assistant|>\n",
			response:   "6",
		},
		{
			name:       "forced instruction",
			line:       `{"instruction": "a", "response": "b"}`,
			format:     FormatInstruction,
			wantFormat: FormatInstruction,
			prompt:     "### Instruction:\na\n\n### Response:\n",
			response:   "b",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			exs, st, err := parse(t, tc.line+"\n", ReadOptions{Format: tc.format})
			if err != nil {
				t.Fatal(err)
			}
			if len(exs) != 1 || st.Examples != 1 || st.ByFormat[tc.wantFormat] != 1 {
				t.Fatalf("got %d examples, stats %+v", len(exs), st)
			}
			ex := exs[0]
			if ex.Format != tc.wantFormat || ex.Prompt() != tc.prompt || ex.Response != tc.response {
				t.Fatalf("format %q prompt %q response %q", ex.Format, ex.Prompt(), ex.Response)
			}
			if ex.Source != "data.jsonl:1" || ex.ID == "" {
				t.Fatalf("source %q id %q", ex.Source, ex.ID)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	good := `{"instruction": "a", "response": "b"}`
	tests := []struct {
		name    string
		text    string
		format  string
		wantErr string // exact error text
		is      error
	}{
		{"malformed JSON names file:line", good + "\n" + good + "\n{\"instruction\": \"a\", \n",
			"", "data.jsonl:3: invalid JSON: unexpected end of JSON input", ErrInvalidJSON},
		{"trailing garbage", good + " x\n", "", "data.jsonl:1: invalid JSON: invalid character 'x' after top-level value", ErrInvalidJSON},
		{"not an object", "[1,2]\n", "", "data.jsonl:1: invalid JSON: want an object, got array", ErrInvalidJSON},
		{"null line", "null\n", "", "data.jsonl:1: invalid JSON: want an object, got null", ErrInvalidJSON},
		{"missing response", `{"instruction": "a"}`, "", `data.jsonl:1: missing field "response"`, ErrMissingField},
		{"missing instruction", `{"response": "a"}`, "", `data.jsonl:1: missing field "instruction"`, ErrMissingField},
		{"alpaca missing output", `{"instruction": "a", "input": "b"}`, "", `data.jsonl:1: missing field "output"`, ErrMissingField},
		{"forced alpaca on instruction line", good, FormatAlpaca, `data.jsonl:1: missing field "output"`, ErrMissingField},
		{"forced chat", good, FormatChat, `data.jsonl:1: missing field "messages"`, nil},
		{"null response", `{"instruction": "a", "response": null}`, "", `data.jsonl:1: missing field "response"`, ErrMissingField},
		{"empty response", `{"instruction": "a", "response": "  "}`, "", `data.jsonl:1: empty field "response"`, ErrEmptyField},
		{"number response", `{"instruction": "a", "response": 5}`, "", `data.jsonl:1: bad field "response": want a string, got number`, ErrBadField},
		{"no known fields", `{"text": "a"}`, "", `data.jsonl:1: no known example fields: want {"instruction","response"}, {"instruction","input","output"} or {"messages"}`, ErrUnknownFields},
		{"chat last not assistant", `{"messages": [{"role": "user", "content": "a"}]}`, "",
			`data.jsonl:1: bad field "messages": the last turn must be "assistant" (it is the response), got "user"`, ErrBadField},
		{"chat bad role", `{"messages": [{"role": "bot", "content": "a"}]}`, "",
			`data.jsonl:1: bad field "messages[0].role": unknown role "bot" (valid: system, user, assistant)`, ErrBadField},
		{"chat no user", `{"messages": [{"role": "assistant", "content": "a"}]}`, "", `data.jsonl:1: missing field "messages": no user turn`, ErrMissingField},
		{"chat empty", `{"messages": []}`, "", `data.jsonl:1: empty field "messages": no turns`, ErrEmptyField},
		{"chat not array", `{"messages": "hi"}`, "", `data.jsonl:1: bad field "messages": want an array, got string`, ErrBadField},
		{"unknown format", good, "sharegpt", `read data.jsonl: unknown format "sharegpt" (valid: auto, instruction, alpaca, chat)`, nil},
		{"empty file", "", "", "read data.jsonl: no examples (0 lines, 0 blank, 0 invalid skipped)", ErrEmptyDataset},
		{"only blank lines", "\n  \r\n\n", "", "read data.jsonl: no examples (3 lines, 3 blank, 0 invalid skipped)", ErrEmptyDataset},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := parse(t, tc.text, ReadOptions{Format: tc.format})
			if err == nil {
				t.Fatalf("no error, want %q", tc.wantErr)
			}
			if err.Error() != tc.wantErr {
				t.Fatalf("error\n got %q\nwant %q", err.Error(), tc.wantErr)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Fatalf("errors.Is(%v, %v) = false", err, tc.is)
			}
		})
	}
}

func TestSkipInvalidCounts(t *testing.T) {
	text := strings.Join([]string{
		`{"instruction": "a", "response": "b"}`,
		`{not json`,
		``,
		`{"instruction": "c"}`,
		`{"instruction": "d", "response": "e"}`,
		`[]`,
	}, "\n")
	exs, st, err := parse(t, text, ReadOptions{SkipInvalid: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(exs) != 2 || st.Examples != 2 || st.Skipped != 3 || st.Blank != 1 || st.Lines != 6 {
		t.Fatalf("examples %d stats %+v", len(exs), st)
	}
	if len(st.SkipReasons) != 3 || !strings.HasPrefix(st.SkipReasons[0], "data.jsonl:2: invalid JSON") ||
		st.SkipReasons[1] != `data.jsonl:4: missing field "response"` {
		t.Fatalf("skip reasons %q", st.SkipReasons)
	}
	if exs[1].Source != "data.jsonl:5" {
		t.Fatalf("source %q", exs[1].Source)
	}
	if s := st.String(); !strings.Contains(s, "2 examples") || !strings.Contains(s, "3 invalid skipped") {
		t.Fatalf("summary %q", s)
	}
	// Everything invalid: the empty data set is still an error.
	if _, st, err := parse(t, "{x\n{y\n", ReadOptions{SkipInvalid: true}); !errors.Is(err, ErrEmptyDataset) || st.Skipped != 2 {
		t.Fatalf("err %v stats %+v", err, st)
	}
}

func TestParseBOMCRLFLongLines(t *testing.T) {
	long := strings.Repeat("x", 200<<10) // > bufio.Scanner's 64 KiB token limit
	text := "\uFEFF" + `{"instruction": "a", "response": "b"}` + "\r\n" +
		"\r\n" +
		`{"instruction": "long", "response": "` + long + `"}` + "\r\n" +
		`{"instruction": "no final newline", "response": "c"}`
	exs, st, err := parse(t, text, ReadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(exs) != 3 || st.Blank != 1 || st.Lines != 4 {
		t.Fatalf("examples %d stats %+v", len(exs), st)
	}
	if exs[0].Instruction != "a" || exs[1].Response != long || exs[2].Response != "c" || exs[2].Source != "data.jsonl:4" {
		t.Fatalf("bad parse: %q %d %q", exs[0].Instruction, len(exs[1].Response), exs[2].Source)
	}
	// A BOM on a later line is not stripped: it is invalid JSON there.
	if _, _, err := parse(t, `{"instruction": "a", "response": "b"}`+"\n\uFEFF{}", ReadOptions{}); !errors.Is(err, ErrInvalidJSON) {
		t.Fatalf("BOM on line 2: %v", err)
	}
}

func TestJSONLRoundTrip(t *testing.T) {
	in := []Example{
		{ID: "i1", Task: "snr", Format: FormatInstruction, Instruction: "Compute <x> & y", Response: "SNR = 20 dB"},
		{ID: "a1", Format: FormatAlpaca, Instruction: "Convert", Input: "20 dBm", Response: "100 mW"},
		{ID: "c1", Format: FormatChat, Messages: []Message{{RoleSystem, "s"}, {RoleUser, "u"}}, Response: "r\nmultiline"},
	}
	path := filepath.Join(t.TempDir(), "out.jsonl")
	if err := WriteJSONL(path, in); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	first := strings.SplitN(string(raw), "\n", 2)[0]
	if want := `{"id":"i1","task":"snr","instruction":"Compute <x> & y","response":"SNR = 20 dB"}`; first != want {
		t.Fatalf("line 1 = %s, want %s", first, want)
	}
	out, _, err := ReadJSONL(path, ReadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range out {
		out[i].Source = ""
	}
	if !reflect.DeepEqual(in, out) {
		t.Fatalf("round trip\n in %+v\nout %+v", in, out)
	}
	if err := EncodeJSONL(&bytes.Buffer{}, []Example{{Format: "bogus"}}); err == nil {
		t.Fatal("unknown format written")
	}
}

func TestReadJSONLMissingFile(t *testing.T) {
	_, _, err := ReadJSONL(filepath.Join(t.TempDir(), "nope.jsonl"), ReadOptions{})
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "nope.jsonl") {
		t.Fatalf("err = %v", err)
	}
}

func FuzzParseJSONL(f *testing.F) {
	f.Add([]byte(`{"instruction": "a", "response": "b"}`), "")
	f.Add([]byte("\uFEFF{\"instruction\":\"a\",\"input\":\"\",\"output\":\"b\"}\r\n\n"), "alpaca")
	f.Add([]byte(`{"messages":[{"role":"user","content":"x"},{"role":"assistant","content":"y"}]}`), "chat")
	f.Add([]byte(`{"messages":[{"role":"user","content":1},{}]}`), "auto")
	f.Add([]byte("{\"instruction\": \"\xff\", \"response\": null}\n[]\nnull"), "instruction")
	f.Fuzz(func(t *testing.T, in []byte, format string) {
		for _, skip := range []bool{false, true} {
			exs, st, err := ParseJSONL(bytes.NewReader(in), "fuzz.jsonl", ReadOptions{Format: format, SkipInvalid: skip})
			if err != nil {
				if exs != nil {
					t.Fatalf("examples returned with error %v", err)
				}
				continue
			}
			if len(exs) == 0 || st.Examples != len(exs) || st.Lines != st.Blank+st.Skipped+st.Examples {
				t.Fatalf("inconsistent stats %+v for %d examples", st, len(exs))
			}
			for _, ex := range exs {
				if strings.TrimSpace(ex.Response) == "" || ex.ID == "" || ex.Source == "" {
					t.Fatalf("bad example %+v", ex)
				}
				if ex.Format != FormatChat && strings.TrimSpace(ex.Instruction) == "" {
					t.Fatalf("empty instruction %+v", ex)
				}
				_ = ex.Prompt()
			}
		}
	})
}
