package capturetest

import (
	"io"
	"net/netip"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

// The addresses of the test captures (RFC 5737 and RFC 3849 only).
var (
	Phone      = netip.MustParseAddr("192.0.2.10")    // device A
	Laptop     = netip.MustParseAddr("192.0.2.11")    // device B
	Unicorn    = netip.MustParseAddr("192.0.2.1")     // the expected resolver
	Rogue      = netip.MustParseAddr("198.51.100.53") // a hard-coded resolver
	Boot1      = netip.MustParseAddr("198.51.100.10") // status-cluster
	Boot2      = netip.MustParseAddr("198.51.100.11") // status-cluster
	Community  = netip.MustParseAddr("203.0.113.50")  // a community node
	Prices     = netip.MustParseAddr("203.0.113.30")  // min-api.cryptocompare.com
	Etherscan  = netip.MustParseAddr("203.0.113.40")  // api.etherscan.io
	DoTServer  = netip.MustParseAddr("203.0.113.53")
	Phone6     = netip.MustParseAddr("2001:db8:1::10")
	Resolver6  = netip.MustParseAddr("2001:db8:1::1")
	Infura6    = netip.MustParseAddr("2001:db8:2::20")
	Boot6      = netip.MustParseAddr("2001:db8:30::10")
	VLANDevice = netip.MustParseAddr("192.0.2.20")
)

func ap(a netip.Addr, port uint16) netip.AddrPort { return netip.AddrPortFrom(a, port) }

func ms(n int) time.Duration { return time.Duration(n) * time.Millisecond }

// Rehearsal writes the capture of a short rehearsal of the scenario in
// testdata/scenario.yaml, taken on the device side of unicorn (pcap):
//
//   - the phone asks unicorn (192.0.2.1) for mainnet.infura.io three times,
//     1 s then 2 s apart, and gets NXDOMAIN each time;
//   - it dials bootnode 198.51.100.10:30303, is refused (RST), falls back to
//     198.51.100.11:30303, refused too, then joins the community node
//     203.0.113.50:30303; it also sends UDP discovery to 198.51.100.10:30303
//     (no answer);
//   - it resolves min-api.cryptocompare.com and completes a TLS handshake
//     with SNI min-api.cryptocompare.com (allowed);
//   - it asks unicorn for api.etherscan.io twice (no answer: blackhole), then
//     asks a hard-coded resolver 198.51.100.53, which answers 203.0.113.40,
//     and completes a handshake with SNI api.etherscan.io: two leaks;
//   - the laptop (192.0.2.11) resolves through unicorn, uses DNS over TLS
//     (203.0.113.53:853) and QUIC (UDP 443 to 203.0.113.30); then sends a
//     plain HTTP request for min-api.cryptocompare.com.
func Rehearsal(w io.Writer) error {
	b, err := NewPcap(w)
	if err != nil {
		return err
	}
	dns := ap(Unicorn, 53)
	// Infura: NXDOMAIN, retried with back-off 1 s, 2 s.
	for i, t := range []int{0, 1000, 3000} {
		c := ap(Phone, uint16(40001+i))
		b.At(ms(t)).DNSQuery(c, dns, uint16(0x101+i), "mainnet.infura.io", layers.DNSTypeA)
		b.At(ms(t+1)).DNSAnswer(dns, c, uint16(0x101+i), "mainnet.infura.io", layers.DNSTypeA, layers.DNSResponseCodeNXDomain)
	}
	// Bootnodes refused, fallback, then the community node.
	b.At(ms(4000)).TCP(ap(Phone, 41000), ap(Boot1, 30303), SYN, nil)
	b.At(ms(4001)).TCP(ap(Boot1, 30303), ap(Phone, 41000), RST|ACK, nil)
	b.At(ms(4500)).TCP(ap(Phone, 41001), ap(Boot2, 30303), SYN, nil)
	b.At(ms(4501)).TCP(ap(Boot2, 30303), ap(Phone, 41001), RST|ACK, nil)
	b.At(ms(5000)).Handshake(ap(Phone, 41002), ap(Community, 30303))
	b.At(ms(5100)).UDP(ap(Phone, 30303), ap(Boot1, 30303), []byte("discovery ping"))
	b.At(ms(5900)).UDP(ap(Phone, 30303), ap(Boot1, 30303), []byte("discovery ping"))
	// Prices: resolved and connected, SNI seen.
	c := ap(Phone, 40010)
	b.At(ms(6000)).DNSQuery(c, dns, 0x110, "min-api.cryptocompare.com", layers.DNSTypeA)
	b.At(ms(6002)).DNSAnswer(dns, c, 0x110, "min-api.cryptocompare.com", layers.DNSTypeA, layers.DNSResponseCodeNoErr, Prices)
	b.At(ms(6010)).Handshake(ap(Phone, 41010), ap(Prices, 443))
	hello, err := ClientHello("min-api.cryptocompare.com")
	if err != nil {
		return err
	}
	b.At(ms(6013)).TCP(ap(Phone, 41010), ap(Prices, 443), PSH|ACK, hello)
	// Etherscan: blackholed at unicorn, then a hard-coded resolver: leaks.
	for i, t := range []int{7000, 9000} {
		c := ap(Phone, uint16(40020+i))
		b.At(ms(t)).DNSQuery(c, dns, uint16(0x120+i), "api.etherscan.io", layers.DNSTypeA)
	}
	c = ap(Phone, 40030)
	b.At(ms(11000)).DNSQuery(c, ap(Rogue, 53), 0x130, "api.etherscan.io", layers.DNSTypeA)
	b.At(ms(11030)).DNSAnswer(ap(Rogue, 53), c, 0x130, "api.etherscan.io", layers.DNSTypeA, layers.DNSResponseCodeNoErr, Etherscan)
	b.At(ms(11100)).Handshake(ap(Phone, 41020), ap(Etherscan, 443))
	if hello, err = ClientHello("api.etherscan.io"); err != nil {
		return err
	}
	b.At(ms(11103)).TCP(ap(Phone, 41020), ap(Etherscan, 443), PSH|ACK, hello)
	// The laptop: DoT, QUIC, plain HTTP.
	c = ap(Laptop, 40040)
	b.At(ms(12000)).DNSQuery(c, dns, 0x140, "min-api.cryptocompare.com", layers.DNSTypeA)
	b.At(ms(12001)).DNSAnswer(dns, c, 0x140, "min-api.cryptocompare.com", layers.DNSTypeA, layers.DNSResponseCodeNoErr, Prices)
	b.At(ms(12100)).Handshake(ap(Laptop, 41040), ap(DoTServer, 853))
	b.At(ms(12200)).UDP(ap(Laptop, 41041), ap(Prices, 443), []byte("quic initial"))
	b.At(ms(12230)).UDP(ap(Prices, 443), ap(Laptop, 41041), []byte("quic handshake"))
	b.At(ms(12300)).Handshake(ap(Laptop, 41042), ap(Prices, 80))
	b.At(ms(12303)).TCP(ap(Laptop, 41042), ap(Prices, 80), PSH|ACK, HTTPRequest("min-api.cryptocompare.com", "/data/price"))
	return b.Close()
}

// VLAN writes a pcap of 802.1Q-tagged frames (VLAN 100): a device resolves
// mainnet.infura.io to 203.0.113.20 and its SYNs to port 443 go
// unanswered, retransmitted after 1 s and 3 s.
func VLAN(w io.Writer) error {
	b, err := NewPcap(w)
	if err != nil {
		return err
	}
	b.VLAN(100)
	infura := netip.MustParseAddr("203.0.113.20")
	c := ap(VLANDevice, 40000)
	b.At(0).DNSQuery(c, ap(Unicorn, 53), 7, "mainnet.infura.io", layers.DNSTypeA)
	b.At(ms(2)).DNSAnswer(ap(Unicorn, 53), c, 7, "mainnet.infura.io", layers.DNSTypeA, layers.DNSResponseCodeNoErr, infura)
	for _, t := range []int{10, 1010, 3010} {
		b.At(ms(t)).TCP(ap(VLANDevice, 42000), ap(infura, 443), SYN, nil)
	}
	return b.Close()
}

// IPv6 writes a pcapng capture over IPv6: AAAA for mainnet.infura.io
// answered 2001:db8:2::20, a TLS handshake to it, and TCP SYNs to a
// bootnode 2001:db8:30::10:30303 that are refused.
func IPv6(w io.Writer) error {
	b, err := NewPcapng(w)
	if err != nil {
		return err
	}
	c := ap(Phone6, 40000)
	b.At(0).DNSQuery(c, ap(Resolver6, 53), 9, "mainnet.infura.io", layers.DNSTypeAAAA)
	b.At(ms(3)).DNSAnswer(ap(Resolver6, 53), c, 9, "mainnet.infura.io", layers.DNSTypeAAAA, layers.DNSResponseCodeNoErr, Infura6)
	b.At(ms(10)).Handshake(ap(Phone6, 42000), ap(Infura6, 443))
	hello, err := ClientHello("mainnet.infura.io")
	if err != nil {
		return err
	}
	b.At(ms(13)).TCP(ap(Phone6, 42000), ap(Infura6, 443), PSH|ACK, hello)
	for i, t := range []int{100, 600} {
		b.At(ms(t)).TCP(ap(Phone6, uint16(42010+i)), ap(Boot6, 30303), SYN, nil)
		b.At(ms(t+1)).TCP(ap(Boot6, 30303), ap(Phone6, uint16(42010+i)), RST|ACK, nil)
	}
	return b.Close()
}

// Malformed writes a pcap with one good SYN among broken frames, and cuts
// the file off in the middle of its last record:
//
//  1. a good SYN 192.0.2.10:43000 -> 203.0.113.30:443
//  2. a frame of 10 bytes (shorter than an Ethernet header)
//  3. IPv4 with a header length of 2 words (less than the minimum 5)
//  4. TCP with a data offset of 15 words in a 20-byte segment
//  5. UDP to port 53 whose payload is not DNS
//  6. a SYN cut short by the snap length (54 of 74 bytes captured)
//  7. an ARP frame (not IP)
//  8. the first 30 bytes of another record (file ends early)
func Malformed(w io.Writer) error {
	var frames [][]byte
	rec := func() (*Builder, *frameRecorder) {
		r := &frameRecorder{}
		return newBuilder(r), r
	}
	b, r := rec()
	b.TCP(ap(Phone, 43000), ap(Prices, 443), SYN, nil)
	good := r.last
	frames = append(frames, good)
	frames = append(frames, good[:10])
	badIHL := append([]byte(nil), good...)
	badIHL[14] = 0x42
	frames = append(frames, badIHL)
	badOff := append([]byte(nil), good...)
	badOff[14+20+12] = 0xf0
	frames = append(frames, badOff)
	b.UDP(ap(Phone, 43001), ap(Unicorn, 53), []byte{0xde, 0xad, 0xbe, 0xef, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xc0})
	frames = append(frames, r.last)
	arp := append([]byte(nil), good[:14]...)
	arp[12], arp[13] = 0x08, 0x06
	arp = append(arp, make([]byte, 28)...)

	pb, err := NewPcap(w)
	if err != nil {
		return err
	}
	for i, f := range frames {
		pb.At(ms(i*10)).Frame(f, 0)
	}
	b.TCP(ap(Phone, 43002), ap(Prices, 443), SYN, nil)
	pb.At(ms(50)).Frame(r.last[:54], len(r.last))
	pb.At(ms(60)).Frame(arp, 0)
	if err := pb.Err(); err != nil {
		return err
	}
	// A record header that promises 60 bytes, and only 14 of them.
	hdr := make([]byte, 16)
	putLE := func(b []byte, v uint32) { b[0], b[1], b[2], b[3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24) }
	putLE(hdr[0:], uint32(Start.Unix()+1))
	putLE(hdr[8:], 60)
	putLE(hdr[12:], 60)
	_, err = w.Write(append(hdr, good[:14]...))
	return err
}

type frameRecorder struct{ last []byte }

func (r *frameRecorder) WritePacket(_ gopacket.CaptureInfo, data []byte) error {
	r.last = append([]byte(nil), data...)
	return nil
}

// Files are the captures of capture/testdata by file name.
var Files = map[string]func(io.Writer) error{
	"rehearsal.pcap": Rehearsal,
	"vlan.pcap":      VLAN,
	"ipv6.pcapng":    IPv6,
	"malformed.pcap": Malformed,
}
