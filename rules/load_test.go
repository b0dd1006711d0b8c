package rules

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestLoadDirectory: a directory loads its .yaml and .yml files in name
// order as one set (a catalogue shared by scenarios), and nothing else.
func TestLoadDirectory(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) {
		t.Helper()
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("b-outage.yml", "scenario: outage\nrules:\n  - {service: api, action: reject}\n")
	write("a-drill.yaml", "scenario: drill\noptional: true\nrules:\n  - {service: api, action: blackhole}\n")
	write("catalogue.yaml", "services:\n  api: {domains: [api.example]}\n")
	write("notes.txt", "not rules")
	write("old/ignored.yaml", "this: [is not loaded")

	set, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, sc := range set.Scenarios {
		names = append(names, sc.Name)
	}
	if got := strings.Join(names, " "); got != "drill outage" {
		t.Errorf("scenarios %q, want name order \"drill outage\"", got)
	}
	if got := strings.Join(set.Defaults(), " "); got != "outage" {
		t.Errorf("defaults %q, want the non-optional outage", got)
	}
	e, err := NewEngine(set, set.Defaults())
	if err != nil {
		t.Fatal(err)
	}
	if d := e.Decide(Flow{Layer: LayerDNS, Host: "x.api.example"}); d.Action != ActionReject || d.Scenario() != "outage" {
		t.Errorf("Decide = %v, want reject by outage", d)
	}

	empty := t.TempDir()
	if _, err := Load(empty); err == nil || !strings.Contains(err.Error(), "no .yaml or .yml rule files") {
		t.Errorf("empty directory: %v", err)
	}
	if _, err := Load(filepath.Join(dir, "missing.yaml")); err == nil || !strings.Contains(err.Error(), "missing.yaml: no such file or directory") {
		t.Errorf("missing file: %v", err)
	}
}
