package node

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestDefaultConfigValidWithKey(t *testing.T) {
	c := DefaultConfig()
	c.SecretKey = DeriveKey([]byte("s"))
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestDefaultNameUniquePerProcess(t *testing.T) {
	a, b := DefaultName(), DefaultName()
	if a == b {
		t.Fatalf("two names in one process are equal: %s", a)
	}
	if len(a) > MaxIDLen {
		t.Fatalf("name %q over %d bytes", a, MaxIDLen)
	}
}

func TestConfigValidate(t *testing.T) {
	key := DeriveKey([]byte("secret"))
	cases := []struct {
		name string
		mut  func(*Config)
		want string // substring of the error; "" = valid
	}{
		{"ok", func(c *Config) {}, ""},
		{"wildcard bind without advertise", func(c *Config) { c.BindAddr = "0.0.0.0" }, "explicit advertise address"},
		{"ipv6 wildcard bind without advertise", func(c *Config) { c.BindAddr = "::" }, "explicit advertise address"},
		{"wildcard bind with advertise", func(c *Config) { c.BindAddr, c.AdvertiseAddr = "0.0.0.0", "10.1.2.3" }, ""},
		{"unspecified advertise", func(c *Config) { c.AdvertiseAddr = "0.0.0.0" }, "unspecified"},
		{"hostname bind", func(c *Config) { c.BindAddr = "localhost" }, "not an IP"},
		{"no key", func(c *Config) { c.SecretKey = nil }, "no gossip key"},
		{"no key insecure", func(c *Config) { c.SecretKey, c.Insecure = nil, true }, ""},
		{"bad key length", func(c *Config) { c.SecretKey = []byte("short") }, "16, 24 or 32"},
		{"min nodes 0", func(c *Config) { c.MinNodes = 0 }, "min-nodes"},
		{"min > world", func(c *Config) { c.MinNodes, c.WorldSize = 3, 2 }, "min-nodes 3 > world-size 2"},
		{"dynamic port advertised", func(c *Config) { c.BindPort, c.AdvertisePort = 0, 7000 }, "kernel-chosen"},
		{"probe timeout >= interval", func(c *Config) { c.ProbeTimeout = c.ProbeInterval }, "below probe interval"},
		{"long endpoint", func(c *Config) { c.Endpoint = strings.Repeat("e", MaxEndpointLen+1) }, "endpoint"},
	}
	for _, tc := range cases {
		c := DefaultConfig()
		c.SecretKey = key
		tc.mut(&c)
		err := c.Validate()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: unexpected error %v", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: error %v, want it to mention %q", tc.name, err, tc.want)
		}
	}
}

func TestDeriveKey(t *testing.T) {
	k := DeriveKey([]byte("any length secret"))
	if len(k) != 32 {
		t.Fatalf("key is %d bytes", len(k))
	}
	if string(k) == string(DeriveKey([]byte("any length secreT"))) {
		t.Fatal("different secrets gave one key")
	}
}

func TestReadSecret(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "s")
	if err := os.WriteFile(f, []byte("hunter2-long-random\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := func(v string) func(string) string {
		return func(k string) string {
			if k == SecretEnv {
				return v
			}
			return ""
		}
	}
	got, err := ReadSecret(f, env("ignored"))
	if err != nil || string(got) != "hunter2-long-random" {
		t.Fatalf("file: %q, %v (the file wins and one newline is trimmed)", got, err)
	}
	got, err = ReadSecret("", env("from-env"))
	if err != nil || string(got) != "from-env" {
		t.Fatalf("env: %q, %v", got, err)
	}
	if _, err := ReadSecret("", env("")); err == nil || !strings.Contains(err.Error(), SecretEnv) {
		t.Fatalf("no secret: %v", err)
	}
	empty := filepath.Join(dir, "empty")
	_ = os.WriteFile(empty, []byte("\n"), 0o600)
	if _, err := ReadSecret(empty, env("x")); err == nil {
		t.Fatal("empty file accepted")
	}
	if _, err := ReadSecret(filepath.Join(dir, "missing"), env("x")); err == nil {
		t.Fatal("missing file accepted")
	}
}
