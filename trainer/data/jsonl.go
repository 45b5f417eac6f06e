package data

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// Errors a JSONL line can carry (wrapped in a *LineError; test with errors.Is).
var (
	ErrInvalidJSON   = errors.New("invalid JSON")
	ErrMissingField  = errors.New("missing field")
	ErrEmptyField    = errors.New("empty field")
	ErrBadField      = errors.New("bad field")
	ErrUnknownFields = errors.New("no known example fields")
	// ErrEmptyDataset: a file (or a filter) left no examples.
	ErrEmptyDataset = errors.New("no examples")
)

// LineError is an error in one line of a JSONL file; it prints as
// "path:line: message", e.g. `data.jsonl:17: invalid JSON: ...`.
type LineError struct {
	Path string
	Line int // 1-based
	Err  error
}

func (e *LineError) Error() string { return fmt.Sprintf("%s:%d: %v", e.Path, e.Line, e.Err) }
func (e *LineError) Unwrap() error { return e.Err }

// ReadOptions controls ReadJSONL. The zero value auto-detects the format per
// line and fails on the first invalid line.
type ReadOptions struct {
	// Format is "auto" (or empty), "instruction", "alpaca" or "chat".
	// A forced format requires that format's fields on every line.
	Format string
	// SkipInvalid skips (and counts, in ReadStats) invalid lines instead of
	// failing on the first one.
	SkipInvalid bool
}

// maxReportedSkips bounds the skip reasons kept in ReadStats.
const maxReportedSkips = 10

// ReadStats summarises one read.
type ReadStats struct {
	Lines       int            // lines in the file, blank and invalid ones included
	Blank       int            // blank (white space only) lines, ignored
	Examples    int            // examples returned
	Skipped     int            // invalid lines skipped (ReadOptions.SkipInvalid)
	SkipReasons []string       // the first few skipped lines' errors
	ByFormat    map[string]int // examples per detected format
}

// String is a one-line summary for logs.
func (s ReadStats) String() string {
	var fm []string
	for _, f := range []string{FormatInstruction, FormatAlpaca, FormatChat} {
		if n := s.ByFormat[f]; n > 0 {
			fm = append(fm, fmt.Sprintf("%s=%d", f, n))
		}
	}
	str := fmt.Sprintf("%d examples (%s) from %d lines, %d blank, %d invalid skipped",
		s.Examples, strings.Join(fm, " "), s.Lines, s.Blank, s.Skipped)
	if len(s.SkipReasons) > 0 {
		str += "; first: " + s.SkipReasons[0]
	}
	return str
}

// ReadJSONL reads the examples of a JSONL file: one JSON object per line, in
// the instruction, alpaca or chat format (see Example.Prompt for the
// templates). Blank lines, CRLF line ends and a leading UTF-8 BOM are
// accepted; lines have no length limit. Unknown extra fields are ignored;
// optional "id" and "task" string fields are kept. An invalid line is an error
// "path:line: ..." (a *LineError) unless opts.SkipInvalid; a file without
// examples is an error (ErrEmptyDataset).
func ReadJSONL(path string, opts ReadOptions) ([]Example, ReadStats, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, ReadStats{}, fmt.Errorf("read dataset: %w", err)
	}
	defer f.Close()
	return ParseJSONL(f, path, opts)
}

// ParseJSONL is ReadJSONL on a reader; name is used in errors and Sources.
func ParseJSONL(r io.Reader, name string, opts ReadOptions) ([]Example, ReadStats, error) {
	st := ReadStats{ByFormat: map[string]int{}}
	format := opts.Format
	if format == "" {
		format = FormatAuto
	}
	if err := ValidateFormat(format); err != nil {
		return nil, st, fmt.Errorf("read %s: %w", name, err)
	}
	br := bufio.NewReaderSize(r, 1<<16)
	var out []Example
	for lineNo := 1; ; lineNo++ {
		line, rerr := br.ReadBytes('\n') // unbounded, unlike bufio.Scanner's 64 KiB
		if rerr != nil && rerr != io.EOF {
			return nil, st, fmt.Errorf("read %s:%d: %w", name, lineNo, rerr)
		}
		if len(line) == 0 && rerr == io.EOF {
			break
		}
		st.Lines++
		if lineNo == 1 {
			line = bytes.TrimPrefix(line, []byte("\uFEFF"))
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(bytes.TrimSpace(line)) == 0 {
			st.Blank++
		} else if ex, err := parseLine(line, format); err != nil {
			lerr := &LineError{Path: name, Line: lineNo, Err: err}
			if !opts.SkipInvalid {
				return nil, st, lerr
			}
			st.Skipped++
			if len(st.SkipReasons) < maxReportedSkips {
				st.SkipReasons = append(st.SkipReasons, lerr.Error())
			}
		} else {
			ex.Source = fmt.Sprintf("%s:%d", name, lineNo)
			st.ByFormat[ex.Format]++
			out = append(out, ex)
		}
		if rerr == io.EOF {
			break
		}
	}
	st.Examples = len(out)
	if len(out) == 0 {
		return nil, st, fmt.Errorf("read %s: %w (%d lines, %d blank, %d invalid skipped)",
			name, ErrEmptyDataset, st.Lines, st.Blank, st.Skipped)
	}
	return out, st, nil
}

// parseLine decodes one non-blank line in the given format (or "auto").
func parseLine(line []byte, format string) (Example, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(line, &raw); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return Example{}, fmt.Errorf("%w: want an object, got %s", ErrInvalidJSON, te.Value)
		}
		return Example{}, fmt.Errorf("%w: %v", ErrInvalidJSON, err)
	}
	if raw == nil {
		return Example{}, fmt.Errorf("%w: want an object, got null", ErrInvalidJSON)
	}
	has := func(k string) bool { v, ok := raw[k]; return ok && string(v) != "null" }
	if format == FormatAuto {
		switch {
		case has("messages"):
			format = FormatChat
		case has("output") || has("input"):
			format = FormatAlpaca
		case has("instruction") || has("response"):
			format = FormatInstruction
		default:
			return Example{}, fmt.Errorf(`%w: want {"instruction","response"}, {"instruction","input","output"} or {"messages"}`, ErrUnknownFields)
		}
	}
	ex := Example{Format: format}
	var err error
	if ex.ID, err = optString(raw, "id"); err != nil {
		return Example{}, err
	}
	if ex.Task, err = optString(raw, "task"); err != nil {
		return Example{}, err
	}
	switch format {
	case FormatInstruction:
		if ex.Instruction, err = reqString(raw, "instruction"); err != nil {
			return Example{}, err
		}
		if ex.Response, err = reqString(raw, "response"); err != nil {
			return Example{}, err
		}
	case FormatAlpaca:
		if ex.Instruction, err = reqString(raw, "instruction"); err != nil {
			return Example{}, err
		}
		if ex.Input, err = optString(raw, "input"); err != nil {
			return Example{}, err
		}
		if ex.Response, err = reqString(raw, "output"); err != nil {
			return Example{}, err
		}
	case FormatChat:
		if !has("messages") {
			return Example{}, fmt.Errorf("%w %q", ErrMissingField, "messages")
		}
		if ex.Messages, ex.Response, err = parseMessages(raw["messages"]); err != nil {
			return Example{}, err
		}
	}
	if ex.ID == "" {
		ex.ID = fmt.Sprintf("h%016x", keyHash(0, ex.Key()))
	}
	return ex, nil
}

// optString returns the string field k, "" when absent or null.
func optString(raw map[string]json.RawMessage, k string) (string, error) {
	v, ok := raw[k]
	if !ok || string(v) == "null" {
		return "", nil
	}
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		return "", fmt.Errorf("%w %q: want a string, got %s", ErrBadField, k, jsonKind(v))
	}
	return s, nil
}

// reqString returns the string field k, which must be present and not blank.
func reqString(raw map[string]json.RawMessage, k string) (string, error) {
	v, ok := raw[k]
	if !ok || string(v) == "null" {
		return "", fmt.Errorf("%w %q", ErrMissingField, k)
	}
	s, err := optString(raw, k)
	if err != nil {
		return "", err
	}
	if strings.TrimSpace(s) == "" {
		return "", fmt.Errorf("%w %q", ErrEmptyField, k)
	}
	return s, nil
}

// parseMessages validates a chat: roles system/user/assistant, string
// contents, at least one user turn, and a final non-empty assistant turn
// (the response); the turns before it are context.
func parseMessages(v json.RawMessage) ([]Message, string, error) {
	var items []json.RawMessage
	if err := json.Unmarshal(v, &items); err != nil {
		return nil, "", fmt.Errorf("%w \"messages\": want an array, got %s", ErrBadField, jsonKind(v))
	}
	if len(items) == 0 {
		return nil, "", fmt.Errorf("%w \"messages\": no turns", ErrEmptyField)
	}
	msgs := make([]Message, 0, len(items))
	users := 0
	for i, it := range items {
		var raw map[string]json.RawMessage
		if err := json.Unmarshal(it, &raw); err != nil || raw == nil {
			return nil, "", fmt.Errorf("%w \"messages[%d]\": want an object, got %s", ErrBadField, i, jsonKind(it))
		}
		role, err := reqString(raw, "role")
		if err != nil {
			return nil, "", fmt.Errorf("messages[%d]: %w", i, err)
		}
		if role != RoleSystem && role != RoleUser && role != RoleAssistant {
			return nil, "", fmt.Errorf("%w \"messages[%d].role\": unknown role %q (valid: system, user, assistant)", ErrBadField, i, role)
		}
		content, err := optString(raw, "content")
		if err != nil {
			return nil, "", fmt.Errorf("messages[%d]: %w", i, err)
		}
		if role == RoleUser {
			users++
		}
		msgs = append(msgs, Message{Role: role, Content: content})
	}
	last := msgs[len(msgs)-1]
	if last.Role != RoleAssistant {
		return nil, "", fmt.Errorf("%w \"messages\": the last turn must be %q (it is the response), got %q", ErrBadField, RoleAssistant, last.Role)
	}
	if strings.TrimSpace(last.Content) == "" {
		return nil, "", fmt.Errorf("%w \"messages[%d].content\": the final assistant turn is the response", ErrEmptyField, len(msgs)-1)
	}
	if users == 0 {
		return nil, "", fmt.Errorf("%w \"messages\": no user turn", ErrMissingField)
	}
	return msgs[:len(msgs)-1], last.Content, nil
}

// jsonKind names the JSON type of v for error messages.
func jsonKind(v json.RawMessage) string {
	t := bytes.TrimSpace(v)
	if len(t) == 0 {
		return "nothing"
	}
	switch t[0] {
	case '{':
		return "object"
	case '[':
		return "array"
	case '"':
		return "string"
	case 't', 'f':
		return "boolean"
	case 'n':
		return "null"
	default:
		return "number"
	}
}

// Line layouts written by EncodeJSONL (field order is fixed by the structs).
type (
	instructionLine struct {
		ID          string `json:"id,omitempty"`
		Task        string `json:"task,omitempty"`
		Instruction string `json:"instruction"`
		Response    string `json:"response"`
	}
	alpacaLine struct {
		ID          string `json:"id,omitempty"`
		Task        string `json:"task,omitempty"`
		Instruction string `json:"instruction"`
		Input       string `json:"input"`
		Output      string `json:"output"`
	}
	chatLine struct {
		ID       string    `json:"id,omitempty"`
		Task     string    `json:"task,omitempty"`
		Messages []Message `json:"messages"`
	}
)

// EncodeJSONL writes examples as JSONL, each in its own Format (empty Format
// means instruction), with "id" and "task" when set. ParseJSONL reads the
// output back into the same examples (Source aside).
func EncodeJSONL(w io.Writer, examples []Example) error {
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	enc.SetEscapeHTML(false)
	for i, ex := range examples {
		var v any
		switch ex.Format {
		case FormatInstruction, "":
			v = instructionLine{ex.ID, ex.Task, ex.Instruction, ex.Response}
		case FormatAlpaca:
			v = alpacaLine{ex.ID, ex.Task, ex.Instruction, ex.Input, ex.Response}
		case FormatChat:
			msgs := append(append([]Message(nil), ex.Messages...), Message{Role: RoleAssistant, Content: ex.Response})
			v = chatLine{ex.ID, ex.Task, msgs}
		default:
			return fmt.Errorf("write example %d (%s): %w", i, ex.ID, ValidateFormat(ex.Format))
		}
		if err := enc.Encode(v); err != nil {
			return fmt.Errorf("write example %d (%s): %w", i, ex.ID, err)
		}
	}
	return bw.Flush()
}

// WriteJSONL writes examples to path atomically (a temporary file in the
// same directory, fsync, rename).
func WriteJSONL(path string, examples []Example) (err error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err = tmp.Chmod(0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = EncodeJSONL(tmp, examples); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = tmp.Sync(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
