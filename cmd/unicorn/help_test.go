package main

import (
	"regexp"
	"strings"
	"testing"
)

// commandsOf lists the commands in the COMMANDS section of a --help text.
func commandsOf(help string) []string {
	var names []string
	in := false
	for _, l := range strings.Split(help, "\n") {
		switch {
		case strings.TrimSpace(l) == "COMMANDS:":
			in = true
		case in && (l == "" || !strings.HasPrefix(l, "   ")):
			in = false
		case in:
			name := strings.TrimSuffix(strings.Fields(l)[0], ",")
			if name != "help" {
				names = append(names, name)
			}
		}
	}
	return names
}

// TestHelpFlags: every flag of every command names what it takes (FILE,
// DURATION, N, not urfave's "value") and says its default once.
func TestHelpFlags(t *testing.T) {
	vague := regexp.MustCompile(`(--[a-z-]+(, -[a-z])?) value\b`)
	var check func(path []string)
	checked := 0
	check = func(path []string) {
		out, errs, code := runCLI(t, append(path, "--help")...)
		if code != 0 {
			t.Fatalf("unicorn %s --help: exit %d %s", strings.Join(path, " "), code, errs)
		}
		checked++
		for _, l := range strings.Split(out, "\n") {
			if !strings.HasPrefix(strings.TrimSpace(l), "-") {
				continue
			}
			if m := vague.FindStringSubmatch(l); m != nil {
				t.Errorf("unicorn %s --help: %s takes a \"value\"; name it in the usage with backquotes:\n%s", strings.Join(path, " "), m[1], l)
			}
			if strings.Count(l, "default:") > 1 {
				t.Errorf("unicorn %s --help: two defaults on one flag:\n%s", strings.Join(path, " "), l)
			}
		}
		for _, sub := range commandsOf(out) {
			check(append(append([]string(nil), path...), sub))
		}
	}
	check(nil)
	if checked < 20 {
		t.Errorf("checked the help of %d commands; the COMMANDS sections were not read", checked)
	}
}
