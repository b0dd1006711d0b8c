package rules

import (
	"fmt"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
)

// fileDecoder walks one YAML file's nodes strictly, adding the position and
// the field path to every error. It never stops at the first error.
type fileDecoder struct {
	file string
	errs *errs
}

func (d *fileDecoder) pos(n *yaml.Node) Pos {
	return Pos{File: d.file, Line: n.Line, Col: n.Column}
}

func (d *fileDecoder) errf(n *yaml.Node, path, format string, args ...any) {
	d.errs.add(d.pos(n), path, format, args...)
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	}
	if n.Tag == "!!null" {
		return "empty"
	}
	return fmt.Sprintf("%q", n.Value)
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func index(path string, i int) string { return fmt.Sprintf("%s[%d]", path, i) }

// fields calls fn for each key of mapping n. Keys not in known are errors
// naming the valid keys; duplicate keys are errors too.
func (d *fileDecoder) fields(n *yaml.Node, path string, known []string, fn func(key string, v *yaml.Node, path string)) bool {
	if n.Kind != yaml.MappingNode {
		d.errf(n, path, "want a mapping of %s, got %s", strings.Join(known, ", "), kindName(n))
		return false
	}
	seen := make(map[string]bool, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		p := join(path, k.Value)
		if !contains(known, k.Value) {
			d.errf(k, p, "unknown field (want one of %s)", strings.Join(known, ", "))
			continue
		}
		if seen[k.Value] {
			d.errf(k, p, "field given twice")
			continue
		}
		seen[k.Value] = true
		fn(k.Value, v, p)
	}
	return true
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// scalar returns n's value if it is a scalar, else records an error.
func (d *fileDecoder) scalar(n *yaml.Node, path, want string) (string, bool) {
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
		d.errf(n, path, "want %s, got %s", want, kindName(n))
		return "", false
	}
	return n.Value, true
}

// str is a scalar that must be a string (a number is accepted as its text).
func (d *fileDecoder) str(n *yaml.Node, path string) (string, bool) {
	return d.scalar(n, path, "a string")
}

// list returns the items of a sequence; a single scalar is accepted as a
// one-item list, so "ports: 443" and "ports: [443]" mean the same.
func (d *fileDecoder) list(n *yaml.Node, path string) []*yaml.Node {
	switch n.Kind {
	case yaml.SequenceNode:
		return n.Content
	case yaml.ScalarNode:
		if n.Tag != "!!null" {
			return []*yaml.Node{n}
		}
	}
	d.errf(n, path, "want a list, got %s", kindName(n))
	return nil
}

// strs decodes a list of strings, calling fn for each with its path.
func (d *fileDecoder) strs(n *yaml.Node, path string, fn func(s string, n *yaml.Node, path string)) {
	for i, it := range d.list(n, path) {
		p := index(path, i)
		if s, ok := d.str(it, p); ok {
			fn(s, it, p)
		}
	}
}

// sortedKeys returns m's keys in order, for "want one of" messages.
func sortedKeys[V any](m map[string]V) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if len(keys) == 0 {
		return "none"
	}
	return strings.Join(keys, ", ")
}
