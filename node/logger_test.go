package node

import (
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

func TestZapWriterLevelsAndFields(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	l := memberlistLogger(zap.New(core))
	l.Printf("[DEBUG] memberlist: Stream connection from=127.0.0.1:5555")
	l.Printf("[INFO] memberlist: Suspect n2 has failed, no acks received")
	l.Printf("[WARN] memberlist: Was able to connect to n2 over TCP but UDP probes failed")
	l.Printf("[ERR] memberlist: Push/Pull with n2 failed: EOF")
	l.Printf("[ERR] memberlist: failed to receive: no installed keys could decrypt the message from=10.9.8.7:7946")
	l.Printf("[ERR] memberlist: failed to receive: encryption is configured but remote state is not encrypted from=10.9.8.6:7946")
	l.Printf("Err: Could not set the deadline: x")

	want := []struct {
		lvl    zapcore.Level
		msg    string
		remote string
	}{
		{zapcore.DebugLevel, "Stream connection", "127.0.0.1:5555"},
		{zapcore.InfoLevel, "Suspect n2 has failed, no acks received", ""},
		{zapcore.WarnLevel, "Was able to connect to n2 over TCP but UDP probes failed", ""},
		{zapcore.ErrorLevel, "Push/Pull with n2 failed: EOF", ""},
		{zapcore.WarnLevel, "rejected gossip encrypted with a different key: the remote node has the wrong --secret-file / PEERTUNE_SECRET", "10.9.8.7:7946"},
		{zapcore.WarnLevel, "rejected unencrypted gossip: the remote node has no --secret-file / PEERTUNE_SECRET", "10.9.8.6:7946"},
		{zapcore.WarnLevel, "Err: Could not set the deadline: x", ""},
	}
	got := logs.All()
	if len(got) != len(want) {
		t.Fatalf("%d entries, want %d: %+v", len(got), len(want), got)
	}
	for i, w := range want {
		g := got[i]
		if g.Level != w.lvl || g.Message != w.msg {
			t.Errorf("%d: got [%s] %q, want [%s] %q", i, g.Level, g.Message, w.lvl, w.msg)
		}
		if r, _ := g.ContextMap()["remote"].(string); r != w.remote {
			t.Errorf("%d: remote %q, want %q", i, r, w.remote)
		}
		if g.LoggerName != "memberlist" {
			t.Errorf("%d: logger %q", i, g.LoggerName)
		}
	}
}
