package data

import (
	"fmt"
	"strings"
	"unicode"
)

// Formats of a JSONL line. FormatAuto detects the format per line.
const (
	FormatAuto        = "auto"
	FormatInstruction = "instruction" // {"instruction", "response"}: the seed's format
	FormatAlpaca      = "alpaca"      // {"instruction", "input", "output"}; input may be empty
	FormatChat        = "chat"        // {"messages": [{"role", "content"}, ...]}
)

// Formats lists the valid values of ReadOptions.Format.
func Formats() []string {
	return []string{FormatAuto, FormatInstruction, FormatAlpaca, FormatChat}
}

// ValidateFormat returns an error naming the valid formats when f is not one.
func ValidateFormat(f string) error {
	for _, v := range Formats() {
		if f == v {
			return nil
		}
	}
	return fmt.Errorf("unknown format %q (valid: %s)", f, strings.Join(Formats(), ", "))
}

// Chat roles.
const (
	RoleSystem    = "system"
	RoleUser      = "user"
	RoleAssistant = "assistant"
)

// Message is one chat turn.
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// Example is one supervised example: a prompt (given) and a response (learnt).
//
// For FormatInstruction and FormatAlpaca the prompt is Instruction (+ Input).
// For FormatChat, Messages holds every turn before the final assistant turn
// (system, user and earlier assistant turns: context, never trained on), and
// Response is the content of the final assistant turn.
type Example struct {
	ID          string    // from the "id" field, else a content hash (stable)
	Format      string    // FormatInstruction, FormatAlpaca or FormatChat
	Task        string    // optional task kind (built-in data sets it; "task" field)
	Instruction string    // instruction and alpaca
	Input       string    // alpaca only; may be empty
	Messages    []Message // chat only: context turns
	Response    string    // the target text (instruction "response", alpaca "output", last assistant turn)
	Source      string    // "file:line" where it was read, or the generator's name
}

// Prompt templates: the only place the prompt text of every format is
// defined. A response follows the prompt directly and ends with the
// tokenizer's EOS token (not text).
//
//	instruction:  "### Instruction:\n{instruction}\n\n### Response:\n"
//	alpaca:       "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
//	              (the Input block only when input is non-empty)
//	chat:         "<|system|>\n{content}\n<|user|>\n{content}\n<|assistant|>\n{content}\n...<|assistant|>\n"
//	              every context turn as "<|role|>\n{content}\n", then the
//	              header of the final assistant turn.
const (
	tplInstruction = "### Instruction:\n"
	tplInput       = "\n\n### Input:\n"
	tplResponse    = "\n\n### Response:\n"
	tplRoleOpen    = "<|"
	tplRoleClose   = "|>\n"
	tplTurnEnd     = "\n"
)

// Prompt renders the prompt text of ex with its format's template.
func (ex Example) Prompt() string {
	var b strings.Builder
	switch ex.Format {
	case FormatChat:
		for _, m := range ex.Messages {
			b.WriteString(tplRoleOpen + m.Role + tplRoleClose)
			b.WriteString(m.Content)
			b.WriteString(tplTurnEnd)
		}
		b.WriteString(tplRoleOpen + RoleAssistant + tplRoleClose)
	default: // instruction, alpaca
		b.WriteString(tplInstruction)
		b.WriteString(ex.Instruction)
		if ex.Input != "" {
			b.WriteString(tplInput)
			b.WriteString(ex.Input)
		}
		b.WriteString(tplResponse)
	}
	return b.String()
}

// Normalize lower-cases s, collapses every run of white space to one space
// and trims it. It is the text identity used by Split and CheckOverlap.
func Normalize(s string) string {
	return strings.Join(strings.FieldsFunc(strings.ToLower(s), unicode.IsSpace), " ")
}

// promptParts returns the normalised non-empty content fields of the prompt,
// in order; template markers and chat roles are not part of an example's
// identity, so the same content in two formats is the same example.
func (ex Example) promptParts() []string {
	var parts []string
	add := func(s string) {
		if n := Normalize(s); n != "" {
			parts = append(parts, n)
		}
	}
	add(ex.Instruction)
	add(ex.Input)
	for _, m := range ex.Messages {
		add(m.Content)
	}
	return parts
}

// partSep separates normalised fields in identity keys; it cannot occur in
// normalised text.
const partSep = "\x00"

// PromptKey is the normalised prompt content of ex (no template markers).
func (ex Example) PromptKey() string { return strings.Join(ex.promptParts(), partSep) }

// Key is the normalised content of ex, prompt and response: two examples with
// the same Key are exact duplicates.
func (ex Example) Key() string {
	return strings.Join(append(ex.promptParts(), Normalize(ex.Response)), partSep)
}
