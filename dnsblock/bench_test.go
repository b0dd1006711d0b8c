package dnsblock

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chaos-unicorn/unicorn/dnsblock/dnstest"
	"github.com/chaos-unicorn/unicorn/rules"
	"github.com/miekg/dns"
)

// benchEngine is what production decides with: a rules.Engine, here
// rejecting infura.io and its subdomains.
func benchEngine(b *testing.B) *rules.Engine {
	b.Helper()
	set, err := rules.Parse("bench.yaml", []byte(`scenario: bench
description: benchmarks
rules:
  - {domains: [infura.io], action: reject}
`))
	if err != nil {
		b.Fatal(err)
	}
	e, err := rules.NewEngine(set, []string{"bench"})
	if err != nil {
		b.Fatal(err)
	}
	return e
}

// benchServer returns a server blocking infura.io with reject and
// forwarding the rest to a fake upstream that knows example.com.
func benchServer(b *testing.B, log *slog.Logger) *Server {
	b.Helper()
	up := dnstest.NewUpstream().WithAnswer("example.com.", "example.com. 300 IN A 192.0.2.1")
	addr, _ := up.Start(b)
	s, err := NewServer(Config{Decider: benchEngine(b), Upstreams: []string{addr}, Logger: log})
	if err != nil {
		b.Fatal(err)
	}
	return s
}

func infoLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// benchNames are distinct blocked names, as dnsperf asks them in the
// bench/dns.sh run.
func benchNames(n int) []string {
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("host%d.infura.io.", i)
	}
	return names
}

// benchHandler runs ServeDNS for ms, in turn, with a fake writer.
func benchHandler(b *testing.B, s *Server, ms ...*dns.Msg) {
	w := newFakeWriter(false)
	s.ServeDNS(w, ms[0]) // warm up: fill the cache, the rule reference, the pool
	if w.writes != 1 {
		b.Fatal("no reply")
	}
	b.ReportAllocs()
	b.ResetTimer()
	i := 0
	for b.Loop() {
		s.ServeDNS(w, ms[i%len(ms)])
		i++
	}
}

// BenchmarkBlockedQuery is the ServeDNS path (TCP, unusual UDP packets) of
// a rejected name: decide, build NXDOMAIN + SOA + EDE, write. "logged" adds
// the Info decision log (to io.Discard) for one name asked again and
// again, "logged-names" for 100k distinct names: see decisionLog.
func BenchmarkBlockedQuery(b *testing.B) {
	m := query("mainnet.infura.io.", dns.TypeA, true)
	b.Run("quiet", func(b *testing.B) { benchHandler(b, benchServer(b, discardLogger()), m) })
	b.Run("logged", func(b *testing.B) { benchHandler(b, benchServer(b, infoLogger()), m) })
	b.Run("logged-names", func(b *testing.B) {
		var ms []*dns.Msg
		for _, n := range benchNames(100000) {
			ms = append(ms, query(n, dns.TypeA, true))
		}
		benchHandler(b, benchServer(b, infoLogger()), ms...)
	})
}

// BenchmarkCachedQuery is the ServeDNS path of an allowed name answered
// from the cache.
func BenchmarkCachedQuery(b *testing.B) {
	benchHandler(b, benchServer(b, discardLogger()), query("example.com.", dns.TypeA, true))
}

// BenchmarkParse is the UDP loop's parse of a query with an OPT record.
func BenchmarkParse(b *testing.B) {
	pkt, _ := query("Mainnet.Infura.io.", dns.TypeA, true).Pack()
	p := newParser(false)
	var q request
	b.ReportAllocs()
	for b.Loop() {
		if res, err := p.parse(pkt, &q); res != parsedQuery {
			b.Fatal(res, err)
		}
	}
}

// udpTarget is one server of BenchmarkUDP and what to ask it.
type udpTarget struct {
	name string
	addr string
	qs   [][]byte // packed queries, asked in turn
}

// BenchmarkUDP measures whole queries over UDP loopback. "baseline" is a
// stock miekg/dns server answering NXDOMAIN with SetReply+WriteMsg, the
// floor any miekg-based server stands on; compare the others against it.
// The plain variants ask one query at a time from one socket (latency);
// the -parallel ones ask from GOMAXPROCS×4 sockets at once (throughput).
// cpu-ns/op is the CPU of the whole process (server and client) per query.
func BenchmarkUDP(b *testing.B) {
	quiet := benchServer(b, discardLogger())
	logged := benchServer(b, infoLogger())
	var addrs []string
	for _, s := range []*Server{quiet, logged} {
		pc := listenUDP(b)
		addrs = append(addrs, pc.LocalAddr().String())
		go s.Serve(context.Background(), pc, nil)
		b.Cleanup(func() { s.Shutdown() })
	}

	base := listenUDP(b)
	started := make(chan struct{})
	stock := &dns.Server{PacketConn: base, NotifyStartedFunc: func() { close(started) },
		Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
			m := new(dns.Msg)
			m.SetRcode(r, dns.RcodeNameError)
			w.WriteMsg(m)
		})}
	go stock.ActivateAndServe()
	<-started
	b.Cleanup(func() { stock.Shutdown() })

	pack := func(names ...string) [][]byte {
		var qs [][]byte
		for _, n := range names {
			q, _ := query(n, dns.TypeA, true).Pack()
			qs = append(qs, q)
		}
		return qs
	}
	blocked := pack("mainnet.infura.io.")
	many := pack(benchNames(100000)...)
	for _, t := range []udpTarget{
		{"baseline", base.LocalAddr().String(), blocked},
		{"blocked", addrs[0], blocked},
		{"cached", addrs[0], pack("example.com.")},
		{"blocked-logged-names", addrs[1], many},
	} {
		b.Run(t.name, func(b *testing.B) { benchUDPSerial(b, t) })
		b.Run(t.name+"-parallel", func(b *testing.B) { benchUDPParallel(b, t) })
	}
}

func benchUDPSerial(b *testing.B, t udpTarget) {
	c := dialUDP(b, t.addr)
	buf := make([]byte, 1500)
	b.ReportAllocs()
	cpu := startCPU()
	i := 0
	for b.Loop() {
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Write(t.qs[i%len(t.qs)]); err != nil {
			b.Fatal(err)
		}
		i++
		if _, err := c.Read(buf); err != nil {
			b.Fatal(err)
		}
	}
	cpu.report(b)
}

// benchUDPParallel keeps every socket busy with one query at a time; a
// lost reply (UDP on loopback under load) is asked again after a timeout,
// counted in lost/op.
func benchUDPParallel(b *testing.B, t udpTarget) {
	var lost, next atomic.Int64
	b.SetParallelism(4)
	b.ReportAllocs()
	cpu := startCPU()
	b.RunParallel(func(pb *testing.PB) {
		c := dialUDP(b, t.addr)
		buf := make([]byte, 1500)
		for pb.Next() {
			q := t.qs[int(next.Add(1))%len(t.qs)]
			for try := 0; ; try++ { // bounded below
				c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
				if _, err := c.Write(q); err != nil {
					b.Error(err)
					return
				}
				if _, err := c.Read(buf); err == nil {
					break
				}
				if lost.Add(1); try >= 10 {
					b.Error("10 queries in a row lost")
					return
				}
			}
		}
	})
	cpu.report(b)
	b.ReportMetric(float64(lost.Load())/float64(b.N), "lost/op")
}

func dialUDP(b *testing.B, addr string) net.Conn {
	c, err := net.Dial("udp", addr)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	return c
}

// cpuClock measures the CPU time of the process.
type cpuClock struct{ start time.Duration }

func startCPU() cpuClock { return cpuClock{processCPU()} }

func (c cpuClock) report(b *testing.B) {
	b.ReportMetric(float64(processCPU()-c.start)/float64(b.N), "cpu-ns/op")
}

func listenUDP(b *testing.B) net.PacketConn {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	return pc
}
