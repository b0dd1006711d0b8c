package proxy_test

import (
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"testing"

	"github.com/chaos-unicorn/unicorn/proxy"
	"github.com/chaos-unicorn/unicorn/rules"
)

// BenchmarkSOCKSRaw pushes bytes to one loopback sink straight, through a
// CONNECT tunnel and through a SOCKS5 CONNECT of the same proxy, so that
// MB/s of the three give both relays' ratios in one run.
func BenchmarkSOCKSRaw(b *testing.B) {
	sink, counts := newSink(b)
	p, err := proxy.New(proxy.Config{
		Decider: rules.DeciderFunc(func(rules.Flow) rules.Decision { return rules.Decision{} }),
		Logger:  discardLogger(),
	})
	if err != nil {
		b.Fatal(err)
	}
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	sl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	served := make(chan error, 2)
	go func() { served <- p.Serve(hl) }()
	go func() { served <- p.SOCKS(proxy.SOCKSConfig{}).Serve(sl) }()
	b.Cleanup(func() { p.Close(); <-served; <-served })

	b.Run("direct", func(b *testing.B) {
		c, err := net.Dial("tcp", sink)
		if err != nil {
			b.Fatal(err)
		}
		pump(b, c.(*net.TCPConn), counts)
	})
	b.Run("connect", func(b *testing.B) { pumpConnect(b, hl.Addr().String(), sink, counts) })
	b.Run("socks", func(b *testing.B) {
		c, err := net.Dial("tcp", sl.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		ap := netip.MustParseAddrPort(sink)
		a := ap.Addr().As4()
		req := append([]byte{5, 1, 0, 5, 1, 0, 1}, a[:]...)
		c.Write(binary.BigEndian.AppendUint16(req, ap.Port()))
		reply := make([]byte, 2+10)
		if _, err := io.ReadFull(c, reply); err != nil || reply[3] != 0 {
			b.Fatalf("SOCKS CONNECT: % x %v", reply, err)
		}
		pump(b, c.(*net.TCPConn), counts)
	})
}
