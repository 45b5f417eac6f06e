package node

import (
	"bytes"
	"log"
	"regexp"
	"strings"

	"go.uber.org/zap"
)

// memberlistLogger returns the *log.Logger memberlist wants, writing through
// zap. memberlist formats every line as "[LEVEL] memberlist: text from=addr";
// zapWriter turns the level tag into a zap level and the from= suffix into a
// "remote" field.
func memberlistLogger(z *zap.Logger) *log.Logger {
	return log.New(&zapWriter{log: z.Named("memberlist")}, "", 0)
}

// zapWriter is an io.Writer that parses memberlist's log lines. log.Logger
// serialises calls and writes one line per call, so Write needs no lock of
// its own; it still splits on newlines to be safe with any writer.
type zapWriter struct {
	log *zap.Logger
}

var fromRE = regexp.MustCompile(`\s*from=(\S+)`)

func (w *zapWriter) Write(p []byte) (int, error) {
	for line := range bytes.SplitSeq(p, []byte{'\n'}) {
		if s := strings.TrimSpace(string(line)); s != "" {
			w.line(s)
		}
	}
	return len(p), nil
}

// gossipRejections maps the errors memberlist logs when a peer's traffic
// fails authentication to what an operator should do about it. memberlist
// itself only says "failed to receive: no installed keys could decrypt the
// message", at ERR, which reads like a bug in memberlist.
var gossipRejections = []struct{ match, msg string }{
	{"no installed keys could decrypt", "rejected gossip encrypted with a different key: the remote node has the wrong --secret-file / " + SecretEnv},
	{"decrypt packet failed", "rejected gossip encrypted with a different key: the remote node has the wrong --secret-file / " + SecretEnv},
	{"encryption is configured but remote state is not encrypted", "rejected unencrypted gossip: the remote node has no --secret-file / " + SecretEnv},
	{"remote state is encrypted and encryption is not configured", "rejected encrypted gossip: this node has no key; pass --secret-file or set " + SecretEnv},
}

func (w *zapWriter) line(s string) {
	level, rest := "", s
	if strings.HasPrefix(s, "[") {
		if i := strings.IndexByte(s, ']'); i > 0 {
			level, rest = s[1:i], strings.TrimSpace(s[i+1:])
		}
	}
	rest = strings.TrimPrefix(rest, "memberlist: ")
	var fields []zap.Field
	if m := fromRE.FindStringSubmatch(rest); m != nil {
		fields = append(fields, zap.String("remote", m[1]))
		rest = strings.TrimSpace(fromRE.ReplaceAllString(rest, ""))
	}

	switch level {
	case "DEBUG":
		w.log.Debug(rest, fields...)
		return
	case "INFO":
		w.log.Info(rest, fields...)
		return
	}
	// Authentication failures: a clear warning instead of a cryptic error.
	// Only at WARN/ERR: the joining side's own DEBUG line about a failed join
	// attempt mentions the same text, and Join reports that one itself.
	lower := strings.ToLower(rest)
	for _, r := range gossipRejections {
		if strings.Contains(lower, r.match) {
			w.log.Warn(r.msg, append(fields, zap.String("detail", rest))...)
			return
		}
	}
	switch level {
	case "WARN":
		w.log.Warn(rest, fields...)
	case "ERR", "ERROR":
		w.log.Error(rest, fields...)
	default:
		// A few memberlist lines have no level tag ("Err: Could not set
		// the deadline"); they are errors of a socket, not of the cluster.
		w.log.Warn(rest, fields...)
	}
}
