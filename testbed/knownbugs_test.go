package testbed

import (
	"flag"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// knownBugs turns on the tests of bugs found in other packages. They fail
// until the bug is fixed, so they are skipped by default:
//
//	go test -race -run TestKnownBug ./testbed/ -args -testbed.knownbugs
var knownBugs = flag.Bool("testbed.knownbugs", false, "run the tests of known bugs in other packages (they fail until fixed)")

// TestKnownBugProxyUpstreamFailover shows that the proxy does not fail
// over between --upstream resolvers while the DNS front end does.
// cmd/unicorn upstreamResolver gives the proxy a net.Resolver whose Dial
// tries the upstreams in order and returns the first connection it could
// open; a UDP "connection" opens whether or not anything listens, so the
// proxy only ever asks the first upstream. When it is down, every allowed
// plain or CONNECT request fails with 502 (naming the system resolver of
// /etc/resolv.conf, which was never asked), while dig through unicorn
// still works.
func TestKnownBugProxyUpstreamFailover(t *testing.T) {
	if !*knownBugs {
		t.Skip("known bug in cmd/unicorn (upstreamResolver never fails over over UDP); run with -args -testbed.knownbugs")
	}
	w := NewWorld(t)
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := pc.LocalAddr().String() // nothing listens there once closed
	pc.Close()
	u := Start(t, "--upstream", dead, "--upstream", w.DNSAddr)

	m := new(dns.Msg)
	m.SetQuestion("example.org.", dns.TypeA)
	r, _, err := (&dns.Client{Timeout: 5 * time.Second}).Exchange(m, u.DNS)
	if err != nil || r.Rcode != dns.RcodeSuccess || len(r.Answer) == 0 {
		t.Fatalf("dig example.org through unicorn: %v %v; the DNS front end should fail over", err, r)
	}

	_, sitePort, _ := net.SplitHostPort(w.Site)
	c := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(u.ProxyURL)}}
	resp, err := c.Get("http://example.org:" + sitePort + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != SiteBody {
		t.Errorf("through the proxy with the first upstream down: %d %q; want 200 from the fake site, as the second upstream answers", resp.StatusCode, body)
	}
}
