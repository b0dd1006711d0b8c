package rules

import (
	"fmt"
	"strconv"
	"strings"
)

// PortRange is an inclusive range of ports, optionally of one protocol.
type PortRange struct {
	Lo, Hi uint16
	Proto  Proto // ProtoAny matches TCP, UDP and unknown
}

func (r PortRange) String() string {
	s := strconv.Itoa(int(r.Lo))
	if r.Hi != r.Lo {
		s += "-" + strconv.Itoa(int(r.Hi))
	}
	if r.Proto != ProtoAny {
		s += "/" + r.Proto.String()
	}
	return s
}

// contains reports whether port/proto is in the range. A flow whose protocol
// is unknown matches only ranges written without a protocol.
func (r PortRange) contains(port uint16, proto Proto) bool {
	return port >= r.Lo && port <= r.Hi && (r.Proto == ProtoAny || r.Proto == proto)
}

// ParsePortRange parses "443", "30300-30310", "30303/udp" or "tcp/443".
func ParsePortRange(s string) (PortRange, error) {
	var r PortRange
	spec := strings.ToLower(strings.TrimSpace(s))
	if p, rest, ok := strings.Cut(spec, "/"); ok {
		// Both "443/tcp" and "tcp/443" are common in the wild.
		proto, num := rest, p
		if p == "tcp" || p == "udp" {
			proto, num = p, rest
		}
		switch proto {
		case "tcp":
			r.Proto = ProtoTCP
		case "udp":
			r.Proto = ProtoUDP
		default:
			return r, fmt.Errorf("%q: protocol %q is not tcp or udp", s, proto)
		}
		spec = num
	}
	lo, hi, isRange := strings.Cut(spec, "-")
	l, err := parsePort(lo)
	if err != nil {
		return r, fmt.Errorf("%q is not a port (want e.g. 443, 30300-30310, 30303/udp)", s)
	}
	h := l
	if isRange {
		if h, err = parsePort(hi); err != nil || h < l {
			return r, fmt.Errorf("%q is not a port range (want low-high, e.g. 30300-30310)", s)
		}
	}
	r.Lo, r.Hi = l, h
	return r, nil
}

func parsePort(s string) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("bad port %q", s)
	}
	return uint16(n), nil
}
