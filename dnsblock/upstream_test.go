package dnsblock

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestNormalizeUpstream(t *testing.T) {
	for _, tc := range []struct{ in, want, err string }{
		{in: "192.0.2.1", want: "192.0.2.1:53"},
		{in: " 192.0.2.1:5353 ", want: "192.0.2.1:5353"},
		{in: "2001:db8::1", want: "[2001:db8::1]:53"},
		{in: "[2001:db8::1]", want: "[2001:db8::1]:53"},
		{in: "[2001:db8::1]:5353", want: "[2001:db8::1]:5353"},
		{in: "fe80::1%eth0", want: "[fe80::1%eth0]:53"},
		{in: "::ffff:192.0.2.1", want: "[::ffff:192.0.2.1]:53"},
		{in: "", err: "not an IP address"},
		{in: "dns.google", err: "not an IP address"},
		{in: "dns.google:53", err: "not an IP address"},
		{in: "192.0.2.1:0", err: "port 0"},
		{in: "192.0.2.1:99999", err: "not an IP address"},
		{in: "[2001:db8::1", err: "not an IP address"},
		{in: "192.0.2.300", err: "not an IP address"},
	} {
		got, err := NormalizeUpstream(tc.in)
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("NormalizeUpstream(%q) = %q, %v; want error %q", tc.in, got, err, tc.err)
		case tc.err == "" && (err != nil || got != tc.want):
			t.Errorf("NormalizeUpstream(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

// FuzzNormalizeUpstream: never panics, and normalizing is idempotent.
func FuzzNormalizeUpstream(f *testing.F) {
	for _, s := range []string{"192.0.2.1", "[2001:db8::1]:53", "2001:db8::1", "fe80::1%eth0", "x:1", "[::]"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := NormalizeUpstream(s)
		if err != nil {
			return
		}
		again, err := NormalizeUpstream(n)
		if err != nil || again != n {
			t.Errorf("NormalizeUpstream(%q) = %q, but that normalizes to %q, %v", s, n, again, err)
		}
	})
}

func TestSystemUpstreams(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "resolv.conf")
	conf := `# generated
search example.
nameserver 192.0.2.53
; comment
nameserver 2001:db8::53
options edns0
nameserver not-an-address
nameserver
`
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := SystemUpstreams(path)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"192.0.2.53:53", "[2001:db8::53]:53"}; !slices.Equal(got, want) {
		t.Errorf("SystemUpstreams = %v, want %v", got, want)
	}

	empty := filepath.Join(dir, "empty.conf")
	os.WriteFile(empty, []byte("search example.\n"), 0o600)
	if _, err := SystemUpstreams(empty); err == nil || !strings.Contains(err.Error(), "no usable nameserver") {
		t.Errorf("no nameserver: %v", err)
	}
	if _, err := SystemUpstreams(filepath.Join(dir, "missing")); err == nil {
		t.Error("missing file: no error")
	}
}
