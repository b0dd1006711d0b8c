package dnsblock

import (
	"errors"
	"net"
	"net/netip"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// A socket bound to a wildcard address (0.0.0.0, ::) receives queries sent
// to any of the host's addresses, but the kernel picks the source of a
// reply by route, which on a multi-homed host may not be the address the
// client asked: the client then drops the reply. So for such sockets the
// loop asks for each datagram's destination (IP_PKTINFO, IPV6_PKTINFO) and
// sends the reply from it. A socket bound to one address needs none of
// this, and pays nothing for it.

// oobSize is the control message buffer of one read.
var oobSize = max(
	len(ipv4.NewControlMessage(ipv4.FlagDst|ipv4.FlagInterface)),
	len(ipv6.NewControlMessage(ipv6.FlagDst|ipv6.FlagInterface)))

// isWildcard reports whether conn is bound to an unspecified address.
func isWildcard(conn *net.UDPConn) bool {
	a, ok := conn.LocalAddr().(*net.UDPAddr)
	return ok && a.IP.IsUnspecified()
}

// enableDst asks the kernel for the destination of every datagram. An
// IPv6 socket may carry IPv4 too, so both families are tried; it fails
// only if both fail.
func enableDst(conn *net.UDPConn) error {
	err6 := ipv6.NewPacketConn(conn).SetControlMessage(ipv6.FlagDst|ipv6.FlagInterface, true)
	err4 := ipv4.NewPacketConn(conn).SetControlMessage(ipv4.FlagDst|ipv4.FlagInterface, true)
	if err6 != nil && err4 != nil {
		return errors.Join(err4, err6)
	}
	return nil
}

// replySource turns the control messages of a query into those of its
// reply. It belongs to one reader and keeps the last reply's, since
// queries mostly arrive on the same address: a hit costs no allocation
// but the parse.
type replySource struct {
	cm4  ipv4.ControlMessage
	cm6  ipv6.ControlMessage
	b4   [4]byte  // cm4.Dst's storage, so that Parse does not allocate it
	b6   [16]byte // cm6.Dst's
	last netip.Addr
	oob  []byte // immutable once made: replies handed to goroutines share it
}

// reply returns the control message that sends a reply from the
// destination of the query whose control messages are oob; nil when oob
// names none (the kernel then picks the source).
func (rs *replySource) reply(oob []byte) []byte {
	dst := rs.dst(oob)
	if !dst.IsValid() {
		return nil
	}
	if dst != rs.last {
		if dst.Is4() {
			rs.oob = (&ipv4.ControlMessage{Src: dst.AsSlice()}).Marshal()
		} else {
			rs.oob = (&ipv6.ControlMessage{Src: dst.AsSlice()}).Marshal()
		}
		rs.last = dst
	}
	return rs.oob
}

// dst returns the destination address in oob, IPv4-mapped addresses as
// IPv4 (such replies need an IPv4 control message).
func (rs *replySource) dst(oob []byte) netip.Addr {
	rs.b6 = [16]byte{}
	rs.cm6 = ipv6.ControlMessage{Dst: rs.b6[:]}
	if rs.cm6.Parse(oob) == nil {
		if a, ok := netip.AddrFromSlice(rs.cm6.Dst); ok && !a.IsUnspecified() {
			return a.Unmap()
		}
	}
	rs.b4 = [4]byte{}
	rs.cm4 = ipv4.ControlMessage{Dst: rs.b4[:]}
	if rs.cm4.Parse(oob) == nil {
		if a, ok := netip.AddrFromSlice(rs.cm4.Dst); ok && !a.IsUnspecified() {
			return a.Unmap()
		}
	}
	return netip.Addr{}
}
