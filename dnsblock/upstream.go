package dnsblock

import (
	"bufio"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
)

// NormalizeUpstream turns an upstream resolver written as an IP address,
// with or without a port, into "host:port" form: "192.0.2.1" becomes
// "192.0.2.1:53", "2001:db8::1" and "[2001:db8::1]" become
// "[2001:db8::1]:53"; an explicit port is kept. Host names are refused:
// unicorn's own lookups must not depend on a resolver it has yet to find.
func NormalizeUpstream(s string) (string, error) {
	t := strings.TrimSpace(s)
	if ap, err := netip.ParseAddrPort(t); err == nil {
		if ap.Port() == 0 {
			return "", fmt.Errorf("dnsblock: upstream %q: port 0 is not a valid port", s)
		}
		return ap.String(), nil
	}
	if strings.HasPrefix(t, "[") && strings.HasSuffix(t, "]") {
		t = t[1 : len(t)-1]
	}
	a, err := netip.ParseAddr(t)
	if err != nil {
		return "", fmt.Errorf("dnsblock: upstream %q is not an IP address with optional port (want e.g. 192.0.2.1, 192.0.2.1:53, 2001:db8::1 or [2001:db8::1]:53)", s)
	}
	return netip.AddrPortFrom(a, 53).String(), nil
}

// maxResolvConfLines bounds how much of a resolv.conf SystemUpstreams reads.
const maxResolvConfLines = 10000

// SystemUpstreams returns the nameservers listed in a resolv.conf file
// (usually /etc/resolv.conf), in order, normalized by NormalizeUpstream. It
// fails when the file cannot be read or lists no usable nameserver. Leaving
// out unicorn's own listening addresses is the caller's job.
func SystemUpstreams(resolvConfPath string) ([]string, error) {
	f, err := os.Open(resolvConfPath)
	if err != nil {
		return nil, fmt.Errorf("dnsblock: system upstreams: %w", err)
	}
	defer f.Close()
	var ups []string
	var errs []error
	sc := bufio.NewScanner(f)
	for line := 1; line <= maxResolvConfLines && sc.Scan(); line++ {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 || fields[0] != "nameserver" {
			continue // comments (# or ;), options, search domains
		}
		up, err := NormalizeUpstream(fields[1])
		if err != nil {
			errs = append(errs, fmt.Errorf("%s:%d: %w", resolvConfPath, line, err))
			continue
		}
		ups = append(ups, up)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("dnsblock: system upstreams: %s: %w", resolvConfPath, err)
	}
	if len(ups) == 0 {
		errs = append(errs, fmt.Errorf("dnsblock: system upstreams: %s lists no usable nameserver", resolvConfPath))
		return nil, errors.Join(errs...)
	}
	return ups, nil
}
