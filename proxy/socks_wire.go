package proxy

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
)

// The SOCKS5 wire format (RFC 1928). Only what unicorn serves is here:
// the "no authentication required" method, CONNECT and UDP ASSOCIATE.

const socksVersion = 5

// Authentication methods (RFC 1928 section 3).
const (
	socksNoAuth       = 0x00
	socksNoAcceptable = 0xff
)

// Commands (RFC 1928 section 4).
const (
	socksCmdConnect      = 0x01
	socksCmdBind         = 0x02
	socksCmdUDPAssociate = 0x03
)

// Address types (RFC 1928 section 5).
const (
	socksAtypIPv4   = 0x01
	socksAtypDomain = 0x03
	socksAtypIPv6   = 0x04
)

// socksReply is a REP code (RFC 1928 section 6).
type socksReply byte

// The reply codes.
const (
	socksSucceeded           socksReply = 0x00
	socksGeneralFailure      socksReply = 0x01
	socksNotAllowed          socksReply = 0x02 // "connection not allowed by ruleset"
	socksNetworkUnreachable  socksReply = 0x03
	socksHostUnreachable     socksReply = 0x04
	socksConnectionRefused   socksReply = 0x05
	socksTTLExpired          socksReply = 0x06
	socksCommandNotSupported socksReply = 0x07
	socksAtypNotSupported    socksReply = 0x08
)

// socksRequest is one parsed SOCKS5 request: a command and a destination,
// given as a name (ATYP 3) or an address.
type socksRequest struct {
	cmd  byte
	host string     // the name asked for; "" when addr is set
	addr netip.Addr // the address asked for (unmapped); invalid when host is set
	port uint16
}

// target is the destination as the proxy's decide takes it: the name, or
// the address in text.
func (r socksRequest) target() string {
	if r.host != "" {
		return r.host
	}
	return r.addr.String()
}

// socksError is a malformed or unsupported request: rep is the reply the
// client gets before the connection closes (0 when it gets none because
// the request is not SOCKS5 at all).
type socksError struct {
	rep socksReply
	msg string
}

func (e *socksError) Error() string { return "socks: " + e.msg }

// readGreeting reads the client's method selection message and reports
// whether it offers "no authentication required".
func readGreeting(r io.Reader) (noAuth bool, err error) {
	var hdr [2]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return false, err
	}
	if hdr[0] != socksVersion {
		return false, &socksError{msg: fmt.Sprintf("version %d, want 5", hdr[0])}
	}
	if hdr[1] == 0 {
		return false, &socksError{msg: "no methods offered"}
	}
	var methods [255]byte
	m := methods[:hdr[1]]
	if _, err := io.ReadFull(r, m); err != nil {
		return false, err
	}
	for _, b := range m {
		if b == socksNoAuth {
			return true, nil
		}
	}
	return false, nil
}

// readRequest reads one request. Its error is a *socksError when the
// request was read but is malformed or unsupported, and an I/O error when
// it could not be read whole.
func readRequest(r io.Reader) (socksRequest, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return socksRequest{}, err
	}
	if hdr[0] != socksVersion {
		return socksRequest{}, &socksError{msg: fmt.Sprintf("request version %d, want 5", hdr[0])}
	}
	req := socksRequest{cmd: hdr[1]}
	// The address comes before the command check so that a BIND request
	// is read whole and answered "command not supported".
	var buf [255 + 2]byte // the longest name and a port
	switch hdr[3] {
	case socksAtypIPv4:
		if _, err := io.ReadFull(r, buf[:4+2]); err != nil {
			return req, err
		}
		req.addr = netip.AddrFrom4([4]byte(buf[:4]))
		req.port = binary.BigEndian.Uint16(buf[4:])
	case socksAtypIPv6:
		if _, err := io.ReadFull(r, buf[:16+2]); err != nil {
			return req, err
		}
		req.addr = netip.AddrFrom16([16]byte(buf[:16])).Unmap()
		req.port = binary.BigEndian.Uint16(buf[16:])
	case socksAtypDomain:
		if _, err := io.ReadFull(r, buf[:1]); err != nil {
			return req, err
		}
		n := int(buf[0])
		if _, err := io.ReadFull(r, buf[:n+2]); err != nil {
			return req, err
		}
		name, err := socksName(buf[:n])
		if err != nil {
			return req, err
		}
		if a, err := netip.ParseAddr(name); err == nil {
			req.addr = a.Unmap().WithZone("") // a literal address in a name field is an address
		} else {
			req.host = name
		}
		req.port = binary.BigEndian.Uint16(buf[n:])
	default:
		return req, &socksError{rep: socksAtypNotSupported, msg: fmt.Sprintf("address type %d", hdr[3])}
	}
	switch req.cmd {
	case socksCmdConnect, socksCmdUDPAssociate:
	case socksCmdBind:
		return req, &socksError{rep: socksCommandNotSupported, msg: "BIND is not supported"}
	default:
		return req, &socksError{rep: socksCommandNotSupported, msg: fmt.Sprintf("command %d", req.cmd)}
	}
	if req.cmd == socksCmdConnect && req.port == 0 {
		return req, &socksError{rep: socksHostUnreachable, msg: "CONNECT to port 0"}
	}
	return req, nil
}

// socksName checks a domain name from an ATYP 3 address: the bytes of a
// host name, without NUL, spaces or control characters. A literal address
// in it is returned as given; decide treats it as an address.
func socksName(b []byte) (string, error) {
	if len(b) == 0 {
		return "", &socksError{rep: socksHostUnreachable, msg: "empty domain name"}
	}
	for _, c := range b {
		if c <= ' ' || c == 0x7f {
			return "", &socksError{rep: socksHostUnreachable, msg: fmt.Sprintf("domain name %q has a control character or space", b)}
		}
	}
	return string(b), nil
}

// appendAddr appends ATYP, the address and the port of ap.
func appendAddr(b []byte, ap netip.AddrPort) []byte {
	a := ap.Addr().Unmap()
	switch {
	case a.Is4():
		s := a.As4()
		b = append(b, socksAtypIPv4)
		b = append(b, s[:]...)
	case a.Is6():
		b = append(b, socksAtypIPv6)
		s := a.As16()
		b = append(b, s[:]...)
	default:
		b = append(b, socksAtypIPv4, 0, 0, 0, 0)
	}
	return binary.BigEndian.AppendUint16(b, ap.Port())
}

// appendReply appends a reply with code rep and bound address bnd (the
// zero AddrPort gives 0.0.0.0:0).
func appendReply(b []byte, rep socksReply, bnd netip.AddrPort) []byte {
	b = append(b, socksVersion, byte(rep), 0)
	return appendAddr(b, bnd)
}

// errShortDatagram and errFragment say why a client datagram was dropped.
var (
	errShortDatagram = errors.New("socks: datagram shorter than its header")
	errFragment      = errors.New("socks: fragmented datagram")
)

// parseDatagram splits a client's UDP relay datagram (RFC 1928 section 7)
// into its destination and payload. Fragments (FRAG other than 0) are not
// reassembled: they are an error, and the caller drops them.
func parseDatagram(b []byte) (dst socksRequest, payload []byte, err error) {
	if len(b) < 4 {
		return dst, nil, errShortDatagram
	}
	if b[2] != 0 {
		return dst, nil, errFragment
	}
	rest := b[4:]
	switch b[3] {
	case socksAtypIPv4:
		if len(rest) < 4+2 {
			return dst, nil, errShortDatagram
		}
		dst.addr = netip.AddrFrom4([4]byte(rest[:4]))
		dst.port = binary.BigEndian.Uint16(rest[4:])
		rest = rest[6:]
	case socksAtypIPv6:
		if len(rest) < 16+2 {
			return dst, nil, errShortDatagram
		}
		dst.addr = netip.AddrFrom16([16]byte(rest[:16])).Unmap()
		dst.port = binary.BigEndian.Uint16(rest[16:])
		rest = rest[18:]
	case socksAtypDomain:
		if len(rest) < 1 || len(rest) < 1+int(rest[0])+2 {
			return dst, nil, errShortDatagram
		}
		n := int(rest[0])
		name, err := socksName(rest[1 : 1+n])
		if err != nil {
			return dst, nil, err
		}
		if a, err := netip.ParseAddr(name); err == nil {
			dst.addr = a.Unmap().WithZone("")
		} else {
			dst.host = name
		}
		dst.port = binary.BigEndian.Uint16(rest[1+n:])
		rest = rest[1+n+2:]
	default:
		return dst, nil, fmt.Errorf("socks: datagram address type %d", b[3])
	}
	if dst.port == 0 {
		return dst, nil, errors.New("socks: datagram to port 0")
	}
	return dst, rest, nil
}

// maxDatagramHeader is the longest header unicorn writes on a reply
// datagram: RSV, FRAG, ATYP, an IPv6 address and a port.
const maxDatagramHeader = 4 + 16 + 2

// putDatagramHeader writes the reply header for a datagram from src into
// the end of b[:maxDatagramHeader] and returns where it starts, so that a
// payload read at b[maxDatagramHeader:] follows it without a copy.
func putDatagramHeader(b []byte, src netip.AddrPort) int {
	var tmp [maxDatagramHeader]byte
	h := append(tmp[:0], 0, 0, 0)
	h = appendAddr(h, src)
	start := maxDatagramHeader - len(h)
	copy(b[start:maxDatagramHeader], h)
	return start
}
