package rules

import (
	"strings"
	"testing"
)

// FuzzParse: any input gives a set or positioned errors, never a panic.
func FuzzParse(f *testing.F) {
	f.Add(engineRules)
	f.Add("scenario: x\nrules:\n  - {domains: [a.example], action: blakhole}\n")
	f.Add("services: {a: {ips: [::1/129]}}")
	f.Add("- [")
	f.Fuzz(func(t *testing.T, in string) {
		set, err := Parse("f.yaml", []byte(in))
		if err != nil {
			for _, e := range Errors(err) {
				if e.Pos.File != "f.yaml" {
					t.Fatalf("error without the file name: %v", e)
				}
			}
			return
		}
		if _, err := NewEngine(set, set.Defaults()); err != nil {
			t.Fatalf("loaded set does not compile: %v", err)
		}
	})
}

// FuzzName: normalising a name is idempotent, and a valid name is found by
// the table in any letter case.
func FuzzName(f *testing.F) {
	for _, s := range []string{"Example.COM.", "*.a.b", "a..b", "x_y-z.test", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		n, err := normalizeName(in)
		if err != nil {
			return
		}
		again, err := normalizeName(n)
		if err != nil || again != n {
			t.Fatalf("normalize(%q) = %q, then %q, %v", in, n, again, err)
		}
		var l nameList
		l.add(n)
		tb := newNameTable(1)
		src, _ := tb.addSource(l.data)
		tb.update(src, 0, len(n), func(listPair) listPair { return listPair{suffix: 1} })
		if tb.find(strings.ToUpper(n)).suffix != 1 {
			t.Fatalf("table does not find %q in upper case", n)
		}
	})
}

// FuzzPortRange: a parsed range prints to a string that parses to itself.
func FuzzPortRange(f *testing.F) {
	for _, s := range []string{"443", "30300-30310/tcp", "udp/53", "0", "5-4"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		r, err := ParsePortRange(in)
		if err != nil {
			return
		}
		r2, err := ParsePortRange(r.String())
		if err != nil || r2 != r {
			t.Fatalf("%q -> %v -> %v, %v", in, r, r2, err)
		}
	})
}
