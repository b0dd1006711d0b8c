package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/chaos-unicorn/unicorn/rules"
)

// decide measures Engine.Decide over many distinct names in a shuffled
// order, as a DNS server sees them, where rules' BenchmarkDecide asks one
// name again and again (always in cache). It prints one line per case:
// "case ns/op allocs/op".
func decide(args []string) error {
	fs := flag.NewFlagSet("decide", flag.ExitOnError)
	n := fs.Int("n", 1_000_000, "names in the list")
	q := fs.Int("q", 100_000, "distinct names asked per case")
	dir := fs.String("dir", "", "scratch directory (default: a temporary one)")
	fs.Parse(args)
	if *dir == "" {
		d, err := os.MkdirTemp("", "benchtool-decide")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		*dir = d
	}
	list := filepath.Join(*dir, "decide.txt")
	f, err := os.Create(list)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	for i := 0; i < *n; i++ {
		fmt.Fprintln(w, name(i))
	}
	if err := w.Flush(); err != nil {
		return err
	}
	f.Close()
	yaml := filepath.Join(*dir, "decide.yaml")
	if err := os.WriteFile(yaml, []byte("scenario: decide\nservices:\n  big:\n    include: [decide.txt]\nrules:\n  - {service: big, action: reject}\n"), 0o644); err != nil {
		return err
	}
	set, err := rules.Load(yaml)
	if err != nil {
		return err
	}
	e, err := rules.NewEngine(set, set.Defaults())
	if err != nil {
		return err
	}
	perm := func(i int) int { return int((int64(i) * 7919) % int64(*n)) }
	cases := []struct {
		name string
		host func(i int) string
		want rules.Action
	}{
		{"hit-same", func(int) string { return name(*n/2) + "." }, rules.ActionReject},
		{"hit-distinct", func(i int) string { return name(perm(i)) + "." }, rules.ActionReject},
		{"hit-sub-distinct", func(i int) string { return "www." + name(perm(i)) + "." }, rules.ActionReject},
		{"miss-distinct-test", func(i int) string { return fmt.Sprintf("other%d.block%d.test.", i, i%1000) }, rules.ActionAllow},
		{"miss-distinct-org", func(i int) string { return fmt.Sprintf("www%d.example%d.org.", i, i%5000) }, rules.ActionAllow},
	}
	for _, c := range cases {
		flows := make([]rules.Flow, *q)
		for i := range flows {
			flows[i] = rules.Flow{Layer: rules.LayerDNS, Host: c.host(i)}
		}
		if d := e.Decide(flows[len(flows)-1]); d.Action != c.want {
			return fmt.Errorf("%s: %s decided %v, want %v", c.name, flows[len(flows)-1].Host, d.Action, c.want)
		}
		r := testing.Benchmark(func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				e.Decide(flows[i%len(flows)])
			}
		})
		fmt.Printf("%s %d %d\n", c.name, r.NsPerOp(), r.AllocsPerOp())
	}
	return nil
}
