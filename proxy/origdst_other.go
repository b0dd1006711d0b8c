//go:build !linux

package proxy

import (
	"errors"
	"net"
	"net/netip"
)

// origDst needs Linux's conntrack: router mode is Linux only.
func origDst(net.Conn) (netip.AddrPort, error) {
	return netip.AddrPort{}, errors.New("original destination: the transparent listener needs Linux")
}
