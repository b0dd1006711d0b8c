// Package capturetest writes small pcap and pcapng captures for the tests
// of capture/ and the benchmark: frames made with gopacket's serialization,
// real TLS ClientHellos from crypto/tls, and deliberately broken frames.
package capturetest

import (
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"io"
	"net"
	"net/netip"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
)

// TCP flags for Builder.TCP.
const (
	FIN = 1 << iota
	SYN
	RST
	PSH
	ACK
)

// Start is the time of the first packet of every capture the package makes.
var Start = time.Date(2019, 4, 1, 9, 0, 0, 0, time.UTC)

type frameWriter interface {
	WritePacket(ci gopacket.CaptureInfo, data []byte) error
}

// Builder writes Ethernet frames into a capture at times the caller sets.
// Errors stick: the first one is returned by Err and later writes do nothing.
type Builder struct {
	w    frameWriter
	ng   *pcapgo.NgWriter
	now  time.Duration
	vlan uint16
	seq  map[[2]netip.AddrPort]uint32
	buf  gopacket.SerializeBuffer
	err  error
}

// NewPcap starts a pcap capture of Ethernet frames on w.
func NewPcap(w io.Writer) (*Builder, error) {
	pw := pcapgo.NewWriter(w)
	if err := pw.WriteFileHeader(65535, layers.LinkTypeEthernet); err != nil {
		return nil, err
	}
	return newBuilder(pw), nil
}

// NewPcapng starts a pcapng capture of Ethernet frames on w; Close flushes it.
func NewPcapng(w io.Writer) (*Builder, error) {
	nw, err := pcapgo.NewNgWriter(w, layers.LinkTypeEthernet)
	if err != nil {
		return nil, err
	}
	b := newBuilder(nw)
	b.ng = nw
	return b, nil
}

func newBuilder(w frameWriter) *Builder {
	return &Builder{w: w, seq: map[[2]netip.AddrPort]uint32{}, buf: gopacket.NewSerializeBuffer()}
}

// Close flushes the capture and returns the first error.
func (b *Builder) Close() error {
	if b.ng != nil && b.err == nil {
		b.err = b.ng.Flush()
	}
	return b.err
}

// Err returns the first error of any write.
func (b *Builder) Err() error { return b.err }

// At sets the time of the next frames, as an offset from Start.
func (b *Builder) At(d time.Duration) *Builder { b.now = d; return b }

// VLAN tags the next frames with an 802.1Q VLAN id (0: untagged).
func (b *Builder) VLAN(id uint16) *Builder { b.vlan = id; return b }

var (
	macClient = net.HardwareAddr{0x02, 0, 0, 0, 0, 1}
	macServer = net.HardwareAddr{0x02, 0, 0, 0, 0, 2}
)

func (b *Builder) ip(src, dst netip.Addr, proto layers.IPProtocol) (gopacket.SerializableLayer, gopacket.NetworkLayer) {
	if src.Is4() {
		l := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: proto, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
		return l, l
	}
	l := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: proto, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
	return l, l
}

func (b *Builder) link(src netip.Addr) []gopacket.SerializableLayer {
	et := layers.EthernetTypeIPv4
	if src.Is6() {
		et = layers.EthernetTypeIPv6
	}
	eth := &layers.Ethernet{SrcMAC: macClient, DstMAC: macServer, EthernetType: et}
	if b.vlan == 0 {
		return []gopacket.SerializableLayer{eth}
	}
	eth.EthernetType = layers.EthernetTypeDot1Q
	return []gopacket.SerializableLayer{eth, &layers.Dot1Q{VLANIdentifier: b.vlan, Type: et}}
}

func (b *Builder) write(ls ...gopacket.SerializableLayer) {
	if b.err != nil {
		return
	}
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(b.buf, opts, ls...); err != nil {
		b.err = err
		return
	}
	b.Frame(b.buf.Bytes(), 0)
}

// Frame writes raw bytes as a frame; wireLen > len(data) records a frame
// cut short by the snap length (0: the frame was captured whole).
func (b *Builder) Frame(data []byte, wireLen int) {
	if b.err != nil {
		return
	}
	if wireLen < len(data) {
		wireLen = len(data)
	}
	ci := gopacket.CaptureInfo{Timestamp: Start.Add(b.now), CaptureLength: len(data), Length: wireLen}
	b.err = b.w.WritePacket(ci, data)
}

func isn(src, dst netip.AddrPort) uint32 {
	h := fnv.New32a()
	fmt.Fprint(h, src, dst)
	return h.Sum32()
}

// TCP writes a TCP segment from src to dst. Sequence numbers follow each
// direction: a SYN always carries the direction's initial one, so a
// repeated SYN is a retransmission.
func (b *Builder) TCP(src, dst netip.AddrPort, flags int, payload []byte) {
	k := [2]netip.AddrPort{src, dst}
	seq, ok := b.seq[k]
	if !ok || flags&SYN != 0 {
		seq = isn(src, dst)
	}
	next := seq + uint32(len(payload))
	if flags&(SYN|FIN) != 0 {
		next++
	}
	b.seq[k] = next
	ack := b.seq[[2]netip.AddrPort{dst, src}]
	ipl, nl := b.ip(src.Addr(), dst.Addr(), layers.IPProtocolTCP)
	t := &layers.TCP{
		SrcPort: layers.TCPPort(src.Port()), DstPort: layers.TCPPort(dst.Port()), Seq: seq, Window: 65535,
		SYN: flags&SYN != 0, ACK: flags&ACK != 0, RST: flags&RST != 0, FIN: flags&FIN != 0, PSH: flags&PSH != 0,
	}
	if t.ACK {
		t.Ack = ack
	}
	if err := t.SetNetworkLayerForChecksum(nl); err != nil {
		b.err = err
		return
	}
	ls := append(b.link(src.Addr()), ipl, t, gopacket.Payload(payload))
	b.write(ls...)
}

// UDP writes a UDP datagram from src to dst.
func (b *Builder) UDP(src, dst netip.AddrPort, payload []byte) {
	ipl, nl := b.ip(src.Addr(), dst.Addr(), layers.IPProtocolUDP)
	u := &layers.UDP{SrcPort: layers.UDPPort(src.Port()), DstPort: layers.UDPPort(dst.Port())}
	if err := u.SetNetworkLayerForChecksum(nl); err != nil {
		b.err = err
		return
	}
	ls := append(b.link(src.Addr()), ipl, u, gopacket.Payload(payload))
	b.write(ls...)
}

// Handshake writes a TCP handshake client to server: SYN, SYN-ACK, ACK,
// 1 ms apart from the current time, and leaves the time after it.
func (b *Builder) Handshake(client, server netip.AddrPort) {
	b.TCP(client, server, SYN, nil)
	b.now += time.Millisecond
	b.TCP(server, client, SYN|ACK, nil)
	b.now += time.Millisecond
	b.TCP(client, server, ACK, nil)
}

// DNSQuery writes a DNS question over UDP.
func (b *Builder) DNSQuery(client, server netip.AddrPort, id uint16, name string, qtype layers.DNSType) {
	m := &layers.DNS{ID: id, RD: true, Questions: []layers.DNSQuestion{{Name: []byte(name), Type: qtype, Class: layers.DNSClassIN}}}
	b.UDP(client, server, b.dnsBytes(m))
}

// DNSAnswer writes the answer to a DNSQuery: rcode, and one A or AAAA
// record per address.
func (b *Builder) DNSAnswer(server, client netip.AddrPort, id uint16, name string, qtype layers.DNSType, rcode layers.DNSResponseCode, addrs ...netip.Addr) {
	m := &layers.DNS{ID: id, QR: true, RD: true, RA: true, ResponseCode: rcode,
		Questions: []layers.DNSQuestion{{Name: []byte(name), Type: qtype, Class: layers.DNSClassIN}}}
	for _, a := range addrs {
		rr := layers.DNSResourceRecord{Name: []byte(name), Class: layers.DNSClassIN, TTL: 60, IP: a.AsSlice(), Type: layers.DNSTypeA}
		if a.Is6() {
			rr.Type = layers.DNSTypeAAAA
		}
		m.Answers = append(m.Answers, rr)
	}
	b.UDP(server, client, b.dnsBytes(m))
}

func (b *Builder) dnsBytes(m *layers.DNS) []byte {
	buf := gopacket.NewSerializeBuffer()
	if err := m.SerializeTo(buf, gopacket.SerializeOptions{FixLengths: true}); err != nil && b.err == nil {
		b.err = err
	}
	return append([]byte(nil), buf.Bytes()...)
}

// ClientHello returns the first TLS record crypto/tls sends to a server
// called name: a real ClientHello with SNI.
func ClientHello(name string) ([]byte, error) {
	c, s := net.Pipe()
	defer s.Close()
	go func() {
		tc := tls.Client(c, &tls.Config{ServerName: name, MinVersion: tls.VersionTLS12})
		_ = tc.Handshake() // fails when s closes; only the hello matters
		c.Close()
	}()
	hdr := make([]byte, 5)
	if _, err := io.ReadFull(s, hdr); err != nil {
		return nil, err
	}
	rec := make([]byte, 5+int(binary.BigEndian.Uint16(hdr[3:])))
	copy(rec, hdr)
	if _, err := io.ReadFull(s, rec[5:]); err != nil {
		return nil, err
	}
	return rec, nil
}

// HTTPRequest returns a plain HTTP/1.1 GET for host and path.
func HTTPRequest(host, path string) []byte {
	return []byte("GET " + path + " HTTP/1.1\r\nHost: " + host + "\r\nUser-Agent: capturetest\r\n\r\n")
}
