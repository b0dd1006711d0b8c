package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestExplainModifiers(t *testing.T) {
	file := filepath.Join(t.TempDir(), "m.yaml")
	os.WriteFile(file, []byte(`scenario: m
rules:
  - {hosts: [a.example], action: reject, probability: 0.3}
  - hosts: [a.example]
    phases: [{for: 10m, action: sinkhole}, {action: reject}]
  - {hosts: [b.example], action: reject, window: {from: "2020-01-01T00:00:00Z", until: "2020-01-02T00:00:00Z"}}
`), 0o644)
	out, stderr, code := runCLI(t, "explain", "--rules", file, "a.example")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, want := range []string{
		"DNS   reject by m rules[0]",
		"      when: probability=0.3",
		"      otherwise: sinkhole by m rules[1]",
		"      when: phases [10m0s sinkhole ttl=1m0s] [then reject rcode=nxdomain ttl=1m0s]",
		"      now: phase 1 of 2 (sinkhole) until 10m0s after the switch",
		"      a device sees: 0.0.0.0 / ::",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("explain a.example lacks %q:\n%s", want, out)
		}
	}
	out, _, _ = runCLI(t, "explain", "--rules", file, "b.example")
	if !strings.Contains(out, "DNS   allow (no rule matched)") || !strings.Contains(out, "not now: m rules[2]") || !strings.Contains(out, "window closed now") {
		t.Errorf("explain b.example does not say the window is closed:\n%s", out)
	}
}
