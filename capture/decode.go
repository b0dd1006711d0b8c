package capture

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

// TCP flags kept in Packet.Flags.
const (
	FlagFIN uint8 = 1 << iota
	FlagSYN
	FlagRST
	FlagPSH
	FlagACK
)

// Packet is what the Decoder read from one frame. Its slices and DNS point
// into the Decoder and the frame: valid until the next Decode.
type Packet struct {
	Time time.Time
	// Length is the frame's length on the wire; CapLen what was captured.
	Length, CapLen int
	// VLAN is the 802.1Q VLAN id of a tagged frame, 0 otherwise.
	VLAN uint16
	// Src and Dst are the IP addresses.
	Src, Dst netip.Addr
	// Proto is TCP or UDP; ProtoAny when the IP packet carried neither
	// (ICMP, a non-first fragment, an unknown extension header).
	Proto            Proto
	SrcPort, DstPort uint16
	// Flags are the TCP flags (FlagSYN, ...).
	Flags uint8
	// Seq is the TCP sequence number.
	Seq uint32
	// Payload is the TCP or UDP payload as captured.
	Payload []byte
	// DNS is the DNS message the packet carried (UDP or TCP port 53, one
	// message per segment), nil otherwise.
	DNS *layers.DNS
}

// Proto is a transport protocol seen in a capture.
type Proto uint8

// The transport protocols the Decoder tells apart.
const (
	ProtoAny Proto = iota
	ProtoTCP
	ProtoUDP
)

func (p Proto) String() string {
	switch p {
	case ProtoTCP:
		return "tcp"
	case ProtoUDP:
		return "udp"
	}
	return "ip"
}

// ErrNotIP is returned for frames that carry no IP packet (ARP, LLDP, ...):
// not an error of the capture, just nothing to report on.
var ErrNotIP = errors.New("not an IP packet")

// MalformedError is a frame the Decoder could not read. The fields it did
// read are still in the Packet.
type MalformedError struct {
	Layer string
	Err   error
}

func (e *MalformedError) Error() string { return fmt.Sprintf("malformed %s: %v", e.Layer, e.Err) }
func (e *MalformedError) Unwrap() error { return e.Err }

// Decoder decodes frames of one link type into Packets, reusing its layers:
// no allocation per packet on the path of plain TCP and UDP frames.
type Decoder struct {
	eth     layers.Ethernet
	dot1q   layers.Dot1Q
	sll     layers.LinuxSLL
	ip4     layers.IPv4
	ip6     layers.IPv6
	tcp     layers.TCP
	udp     layers.UDP
	dns     layers.DNS
	parser  *gopacket.DecodingLayerParser
	v4, v6  *gopacket.DecodingLayerParser // for raw-IP link types
	raw     bool
	decoded []gopacket.LayerType
	pkt     Packet
}

// NewDecoder returns a Decoder for frames of link type lt: Ethernet (with
// 802.1Q tags), Linux cooked capture, or raw IPv4/IPv6.
func NewDecoder(lt layers.LinkType) (*Decoder, error) {
	d := &Decoder{decoded: make([]gopacket.LayerType, 0, 8)}
	all := []gopacket.DecodingLayer{&d.eth, &d.dot1q, &d.sll, &d.ip4, &d.ip6, &d.tcp, &d.udp}
	mk := func(first gopacket.LayerType) *gopacket.DecodingLayerParser {
		p := gopacket.NewDecodingLayerParser(first, all...)
		// Application layers (DNS, TLS, ...) are decoded by hand where
		// wanted; anything else simply ends the walk.
		p.IgnoreUnsupported = true
		return p
	}
	switch lt {
	case layers.LinkTypeEthernet:
		d.parser = mk(layers.LayerTypeEthernet)
	case layers.LinkTypeLinuxSLL:
		d.parser = mk(layers.LayerTypeLinuxSLL)
	case layers.LinkTypeRaw, layers.LinkTypeIPv4, layers.LinkTypeIPv6, 12: // 12: raw IP on OpenBSD-style DLT
		d.raw = true
		d.v4, d.v6 = mk(layers.LayerTypeIPv4), mk(layers.LayerTypeIPv6)
	default:
		return nil, fmt.Errorf("link type %v is not supported (want Ethernet, Linux cooked or raw IP)", lt)
	}
	return d, nil
}

// Decode reads one frame. It returns ErrNotIP for frames without IP, a
// *MalformedError (with the Packet filled as far as it got) for frames it
// could not read, and never panics.
func (d *Decoder) Decode(data []byte, ci gopacket.CaptureInfo) (p *Packet, err error) {
	p = &d.pkt
	*p = Packet{Time: ci.Timestamp, Length: ci.Length, CapLen: ci.CaptureLength}
	if p.Length < p.CapLen {
		p.Length = p.CapLen
	}
	parser := d.parser
	if d.raw {
		if len(data) == 0 {
			return p, &MalformedError{Layer: "ip", Err: errors.New("empty packet")}
		}
		parser = d.v4
		if data[0]>>4 == 6 {
			parser = d.v6
		}
	}
	perr := parser.DecodeLayers(data, &d.decoded)
	ip := false
	var last gopacket.LayerType
	for _, lt := range d.decoded {
		last = lt
		switch lt {
		case layers.LayerTypeDot1Q:
			p.VLAN = d.dot1q.VLANIdentifier
		case layers.LayerTypeIPv4:
			ip = true
			p.Src = netip.AddrFrom4([4]byte(d.ip4.SrcIP.To4()))
			p.Dst = netip.AddrFrom4([4]byte(d.ip4.DstIP.To4()))
		case layers.LayerTypeIPv6:
			ip = true
			p.Src = netip.AddrFrom16([16]byte(d.ip6.SrcIP.To16())).Unmap()
			p.Dst = netip.AddrFrom16([16]byte(d.ip6.DstIP.To16())).Unmap()
		case layers.LayerTypeTCP:
			p.Proto = ProtoTCP
			p.SrcPort, p.DstPort = uint16(d.tcp.SrcPort), uint16(d.tcp.DstPort)
			p.Seq = d.tcp.Seq
			p.Flags = tcpFlags(&d.tcp)
			p.Payload = d.tcp.Payload
		case layers.LayerTypeUDP:
			p.Proto = ProtoUDP
			p.SrcPort, p.DstPort = uint16(d.udp.SrcPort), uint16(d.udp.DstPort)
			p.Payload = d.udp.Payload
		}
	}
	if perr != nil {
		return p, &MalformedError{Layer: nextLayerName(last), Err: perr}
	}
	if !ip {
		return p, ErrNotIP
	}
	if p.SrcPort == 53 || p.DstPort == 53 {
		if err := d.decodeDNS(p); err != nil {
			return p, err
		}
	}
	return p, nil
}

// decodeDNS reads the DNS message of a port-53 packet: the UDP payload, or
// the one length-prefixed message a TCP segment starts with.
func (d *Decoder) decodeDNS(p *Packet) (err error) {
	defer func() {
		// A parser bug on hostile input must cost one packet, not the report.
		if r := recover(); r != nil {
			err = &MalformedError{Layer: "dns", Err: fmt.Errorf("decoder panic: %v", r)}
		}
	}()
	msg := p.Payload
	if p.Proto == ProtoTCP {
		if len(msg) < 2 {
			return nil // handshake, ack or a message split over segments
		}
		n := int(binary.BigEndian.Uint16(msg))
		if n > len(msg)-2 {
			return nil // the rest is in later segments; not reassembled
		}
		msg = msg[2 : 2+n]
	}
	if len(msg) == 0 || p.Proto == ProtoAny {
		return nil
	}
	if err := d.dns.DecodeFromBytes(msg, gopacket.NilDecodeFeedback); err != nil {
		return &MalformedError{Layer: "dns", Err: err}
	}
	p.DNS = &d.dns
	return nil
}

func tcpFlags(t *layers.TCP) uint8 {
	var f uint8
	if t.FIN {
		f |= FlagFIN
	}
	if t.SYN {
		f |= FlagSYN
	}
	if t.RST {
		f |= FlagRST
	}
	if t.PSH {
		f |= FlagPSH
	}
	if t.ACK {
		f |= FlagACK
	}
	return f
}

// nextLayerName names the layer after last, the one that failed.
func nextLayerName(last gopacket.LayerType) string {
	switch last {
	case gopacket.LayerTypeZero:
		return "frame"
	case layers.LayerTypeEthernet, layers.LayerTypeDot1Q, layers.LayerTypeLinuxSLL:
		return "ip"
	case layers.LayerTypeIPv4, layers.LayerTypeIPv6:
		return "transport"
	}
	return "packet"
}
