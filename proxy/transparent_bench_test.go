package proxy

import (
	"io"
	"net"
	"net/netip"
	"testing"

	"github.com/chaos-unicorn/unicorn/rules"
)

// BenchmarkTransparentConnect: one client-first exchange (a byte each way)
// per connection, through the transparent listener (the original
// destination faked, no firewall) and directly, on loopback.
func BenchmarkTransparentConnect(b *testing.B) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 1)
				if _, err := io.ReadFull(c, buf); err == nil {
					c.Write(buf)
				}
			}()
		}
	}()
	dst := netip.MustParseAddrPort(l.Addr().String())
	exchange := func(b *testing.B, addr string) {
		buf := []byte{1}
		for i := 0; i < b.N; i++ {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := c.Write(buf); err != nil {
				b.Fatal(err)
			}
			if _, err := io.ReadFull(c, buf); err != nil {
				b.Fatal(err)
			}
			c.Close()
		}
	}
	b.Run("direct", func(b *testing.B) { exchange(b, l.Addr().String()) })
	b.Run("transparent", func(b *testing.B) {
		w := newTransparentWorldQuiet(b, dst)
		defer w.px.Close()
		b.ReportAllocs()
		exchange(b, w.addr)
	})
}

// newTransparentWorldQuiet is a transparent listener that allows
// everything and logs nothing, for benchmarks.
func newTransparentWorldQuiet(b *testing.B, dst netip.AddrPort) *transparentWorld {
	e, err := rules.NewEngine(&rules.Set{}, nil)
	if err != nil {
		b.Fatal(err)
	}
	px, err := New(Config{Decider: e, OrigDst: func(net.Conn) (netip.AddrPort, error) { return dst, nil }})
	if err != nil {
		b.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go px.ServeTransparent(l)
	return &transparentWorld{addr: l.Addr().String(), px: px}
}
