package dnsblock

import (
	"context"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/chaos-unicorn/unicorn/dnsblock/dnstest"
	"github.com/chaos-unicorn/unicorn/rules"
	"github.com/miekg/dns"
)

// benchServer returns a server blocking infura.io with reject and
// forwarding the rest to a fake upstream that knows example.com.
func benchServer(b *testing.B, log *slog.Logger) *Server {
	b.Helper()
	up := dnstest.NewUpstream().WithAnswer("example.com.", "example.com. 300 IN A 192.0.2.1")
	addr, _ := up.Start(b)
	s, err := NewServer(Config{
		Decider:   &blocker{rule: testRule(rules.ActionReject, rules.Params{})},
		Upstreams: []string{addr},
		Logger:    log,
	})
	if err != nil {
		b.Fatal(err)
	}
	return s
}

// benchHandler runs ServeDNS for m with a fake writer.
func benchHandler(b *testing.B, s *Server, m *dns.Msg) {
	w := newFakeWriter(false)
	s.ServeDNS(w, m) // warm up: fill the cache, the rule reference, the pool
	if w.writes != 1 {
		b.Fatal("no reply")
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		s.ServeDNS(w, m)
	}
}

// BenchmarkBlockedQuery is the handler path of a rejected name: decide,
// build NXDOMAIN + SOA + EDE, write. "logged" adds the Info decision log
// line (to io.Discard), which every blocked query costs in production.
func BenchmarkBlockedQuery(b *testing.B) {
	m := query("mainnet.infura.io.", dns.TypeA, true)
	b.Run("quiet", func(b *testing.B) { benchHandler(b, benchServer(b, discardLogger()), m) })
	b.Run("logged", func(b *testing.B) {
		benchHandler(b, benchServer(b, slog.New(slog.NewTextHandler(io.Discard, nil))), m)
	})
}

// BenchmarkCachedQuery is the handler path of an allowed name answered
// from the cache.
func BenchmarkCachedQuery(b *testing.B) {
	benchHandler(b, benchServer(b, discardLogger()), query("example.com.", dns.TypeA, true))
}

// BenchmarkUDP measures whole queries over UDP loopback, one at a time:
// "baseline" is a stock miekg/dns server answering NXDOMAIN with
// SetReply+WriteMsg, the floor any miekg-based server stands on; compare
// the others against it.
func BenchmarkUDP(b *testing.B) {
	s := benchServer(b, discardLogger())
	pc := listenUDP(b)
	go s.Serve(context.Background(), pc, nil)
	b.Cleanup(func() { s.Shutdown() })

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

	for _, bc := range []struct {
		name string
		addr string
		q    *dns.Msg
	}{
		{"baseline", base.LocalAddr().String(), query("mainnet.infura.io.", dns.TypeA, true)},
		{"blocked", pc.LocalAddr().String(), query("mainnet.infura.io.", dns.TypeA, true)},
		{"cached", pc.LocalAddr().String(), query("example.com.", dns.TypeA, true)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			c, err := net.Dial("udp", bc.addr)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			q, _ := bc.q.Pack()
			buf := make([]byte, 1500)
			b.ReportAllocs()
			for b.Loop() {
				c.SetReadDeadline(time.Now().Add(2 * time.Second))
				if _, err := c.Write(q); err != nil {
					b.Fatal(err)
				}
				if _, err := c.Read(buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func listenUDP(b *testing.B) net.PacketConn {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	return pc
}
