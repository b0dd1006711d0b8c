package rules

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// bigRules writes a scenario with n generated domains (through include:)
// and m generated CIDRs, and returns its path. Generated names are under
// .test and addresses in 198.18.0.0/15 and 2001:db8::/32: never dialled.
func bigRules(tb testing.TB, n, m int) string {
	tb.Helper()
	dir := tb.TempDir()
	f, err := os.Create(filepath.Join(dir, "big.txt"))
	if err != nil {
		tb.Fatal(err)
	}
	w := bufio.NewWriter(f)
	for i := 0; i < n; i++ {
		fmt.Fprintf(w, "host%d.block%d.test\n", i, i%1000)
	}
	w.Flush()
	f.Close()
	y, _ := os.Create(filepath.Join(dir, "big.yaml"))
	fmt.Fprintf(y, "scenario: big\nservices:\n  big:\n    include: [big.txt]\n  nets:\n    ips:\n      - 192.0.2.0/24\n")
	for i := 0; i < m; i++ {
		if i%2 == 0 {
			fmt.Fprintf(y, "      - 198.%d.%d.0/24\n", 18+(i>>16)&1, (i>>8)&255)
		} else {
			fmt.Fprintf(y, "      - 2001:db8:%x::/48\n", i)
		}
	}
	fmt.Fprintf(y, "rules:\n  - {domains: [allowed.block7.test], action: allow}\n  - {service: big, action: reject}\n  - {service: nets, action: blackhole}\n")
	y.Close()
	return filepath.Join(dir, "big.yaml")
}

var bigOnce struct {
	sync.Once
	e *Engine
}

func bigEngine(b *testing.B) *Engine {
	bigOnce.Do(func() {
		set, err := Load(bigRules(b, 1_000_000, 10_000))
		if err != nil {
			b.Fatal(err)
		}
		bigOnce.e, err = NewEngine(set, set.Defaults())
		if err != nil {
			b.Fatal(err)
		}
	})
	return bigOnce.e
}

// BenchmarkDecide measures one decision against 1,000,000 domains and
// 10,000 CIDRs. Target: under 1 µs, no allocation on a miss.
func BenchmarkDecide(b *testing.B) {
	e := bigEngine(b)
	cases := []struct {
		name string
		flow Flow
		want Action
	}{
		{"dns-blocked", Flow{Layer: LayerDNS, Host: "www.host123456.block456.test"}, ActionReject},
		{"dns-miss", Flow{Layer: LayerDNS, Host: "www.example.org"}, ActionAllow},
		{"tcp-blocked-addr", Flow{Layer: LayerTCP, Addr: netip.MustParseAddr("198.18.7.9"), Port: 443, Proto: ProtoTCP}, ActionBlackhole},
		{"tcp-miss-name-and-addr", Flow{Layer: LayerTCP, Host: "api.example.org", Addr: netip.MustParseAddr("203.0.113.9"), Port: 443, Proto: ProtoTCP}, ActionAllow},
		{"tcp-miss-ipv6", Flow{Layer: LayerTCP, Addr: netip.MustParseAddr("2001:db9::1"), Port: 443, Proto: ProtoTCP}, ActionAllow},
	}
	for _, c := range cases {
		if d := e.Decide(c.flow); d.Action != c.want {
			b.Fatalf("%s: %v, want %v", c.name, d, c.want)
		}
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				e.Decide(c.flow)
			}
		})
	}
}

// BenchmarkDecideDistinct decides 100,000 different names in turn, so that
// the table is read from memory, not from the CPU's caches: the cost a busy
// resolver sees.
func BenchmarkDecideDistinct(b *testing.B) {
	e := bigEngine(b)
	const n = 100_000
	rng := rand.New(rand.NewPCG(1, 2))
	for _, c := range []struct {
		name string
		host func(i int) string
		want Action
	}{
		{"hit", func(i int) string { j := rng.IntN(1_000_000); return fmt.Sprintf("host%d.block%d.test", j, j%1000) }, ActionReject},
		{"hit-subdomain", func(i int) string {
			j := rng.IntN(1_000_000)
			return fmt.Sprintf("www%d.cdn.host%d.block%d.test", i, j, j%1000)
		}, ActionReject},
		{"miss-same-tld", func(i int) string { return fmt.Sprintf("other%d.block%d.test", i, i%1000) }, ActionAllow},
		{"miss", func(i int) string { return fmt.Sprintf("www.site%d.example.org", i) }, ActionAllow},
	} {
		flows := make([]Flow, n)
		for i := range flows {
			flows[i] = Flow{Layer: LayerDNS, Host: c.host(i)}
		}
		if d := e.Decide(flows[0]); d.Action != c.want {
			b.Fatalf("%s: %v, want %v", c.name, d, c.want)
		}
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				e.Decide(flows[i%n])
			}
		})
	}
}

// BenchmarkLoad1M loads and compiles a 1,000,000-domain list. Target: under 1 s.
func BenchmarkLoad1M(b *testing.B) {
	path := bigRules(b, 1_000_000, 0)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		set, err := Load(path)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := NewEngine(set, set.Defaults()); err != nil {
			b.Fatal(err)
		}
	}
}
