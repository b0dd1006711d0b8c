package capturetest

import (
	"bufio"
	"io"
	"math/rand/v2"
	"net/netip"
	"time"

	"github.com/google/gopacket/layers"
)

// Bulk writes a pcap of about size bytes of ordinary traffic for the
// benchmark, the same for the same seed: 200 devices in 192.0.2.0/24
// resolving names and talking TCP to 250 servers in 203.0.113.0/24 and
// 198.51.100.0/24 (handshake, 4 to 40 data segments of 60 to 1400 bytes
// each way, FIN), with a refused bootnode retry now and then and UDP
// packets to port 30303.
func Bulk(w io.Writer, size int64, seed uint64) error {
	cw := &countWriter{w: bufio.NewWriterSize(w, 1<<20)}
	b, err := NewPcap(cw)
	if err != nil {
		return err
	}
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	payload := make([]byte, 1400)
	for i := range payload {
		payload[i] = byte(rng.UintN(256))
	}
	dns := ap(Unicorn, 53)
	names := []string{"mainnet.infura.io", "api.etherscan.io", "min-api.cryptocompare.com", "example.org", "status.im"}
	var now time.Duration
	step := func() { now += time.Duration(20+rng.IntN(200)) * time.Microsecond; b.At(now) }
	for n := 0; cw.n < size && b.Err() == nil; n++ {
		dev := netip.AddrFrom4([4]byte{192, 0, 2, byte(10 + rng.IntN(200))})
		srv := netip.AddrFrom4([4]byte{203, 0, 113, byte(1 + rng.IntN(250))})
		if rng.IntN(4) == 0 {
			srv = netip.AddrFrom4([4]byte{198, 51, 100, byte(1 + rng.IntN(250))})
		}
		cport := uint16(20000 + n%40000)
		if n%8 == 0 {
			c, id, name := ap(dev, cport), uint16(n), names[rng.IntN(len(names))]
			step()
			b.DNSQuery(c, dns, id, name, layers.DNSTypeA)
			step()
			b.DNSAnswer(dns, c, id, name, layers.DNSTypeA, layers.DNSResponseCodeNoErr, srv)
		}
		switch rng.IntN(20) {
		case 0: // a refused bootnode
			step()
			b.TCP(ap(dev, cport), ap(srv, 30303), SYN, nil)
			step()
			b.TCP(ap(srv, 30303), ap(dev, cport), RST|ACK, nil)
			continue
		case 1: // discovery
			step()
			b.UDP(ap(dev, 30303), ap(srv, 30303), payload[:rng.IntN(200)+40])
			continue
		}
		c, s := ap(dev, cport), ap(srv, 443)
		step()
		b.Handshake(c, s)
		for i := 4 + rng.IntN(37); i > 0; i-- {
			step()
			b.TCP(c, s, PSH|ACK, payload[:60+rng.IntN(1341)])
			step()
			b.TCP(s, c, PSH|ACK, payload[:60+rng.IntN(1341)])
		}
		step()
		b.TCP(c, s, FIN|ACK, nil)
		step()
		b.TCP(s, c, FIN|ACK, nil)
	}
	if err := b.Close(); err != nil {
		return err
	}
	return cw.w.Flush()
}

type countWriter struct {
	w *bufio.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
