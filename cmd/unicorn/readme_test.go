package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestReadmeRuleExamples: every YAML scenario shown in the READMEs passes
// `unicorn rules check`, so the docs cannot drift from the rule language.
func TestReadmeRuleExamples(t *testing.T) {
	checked := 0
	for _, doc := range []string{"../../README.md", "../../rules/README.md"} {
		text, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		blocks := strings.Split(string(text), "```yaml\n")
		for i, b := range blocks[1:] {
			yaml, _, ok := strings.Cut(b, "```")
			if !ok || !strings.Contains(yaml, "scenario:") {
				continue
			}
			file := filepath.Join(t.TempDir(), "example.yaml")
			os.WriteFile(file, []byte(yaml), 0o644)
			if _, stderr, code := runCLI(t, "rules", "check", file); code != 0 {
				t.Errorf("%s, YAML block %d: rules check fails:\n%s\n%s", doc, i+1, stderr, yaml)
			}
			checked++
		}
	}
	if checked < 2 {
		t.Errorf("checked %d YAML scenarios in the READMEs, want at least 2", checked)
	}
}
