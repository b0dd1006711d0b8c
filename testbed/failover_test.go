package testbed

import (
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// TestUpstreamFailover: with the first --upstream dead, both the DNS front
// end and the proxy's own lookups of allowed hosts use the second.
func TestUpstreamFailover(t *testing.T) {
	w := NewWorld(t)
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := pc.LocalAddr().String() // nothing listens there once closed
	pc.Close()
	u := Start(t, "--upstream", dead, "--upstream", w.DNSAddr)

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

	m := new(dns.Msg)
	m.SetQuestion("0.pool.ntp.org.", dns.TypeA)
	r, _, err := (&dns.Client{Timeout: 5 * time.Second}).Exchange(m, u.DNS)
	if err != nil || r.Rcode != dns.RcodeSuccess || len(r.Answer) == 0 {
		t.Fatalf("dig 0.pool.ntp.org through unicorn: %v %v; the DNS front end should fail over", err, r)
	}

}

// TestTwoDNSAddresses: with two --dns addresses, both answer, from one
// cache: a name asked on one is not asked upstream again for the other.
func TestTwoDNSAddresses(t *testing.T) {
	u := Start(t, "--dns", "127.0.0.1:0", "--dns", "127.0.0.2:0")
	var addrs []string
	for _, l := range u.Banner {
		if f := strings.Fields(l); len(f) > 1 && f[0] == "DNS" {
			addrs = append(addrs, f[1])
		}
	}
	if len(addrs) != 2 {
		t.Fatalf("banner names DNS addresses %v, want two:\n%s", addrs, strings.Join(u.Banner, "\n"))
	}
	for _, a := range addrs {
		m := new(dns.Msg)
		m.SetQuestion("example.org.", dns.TypeA)
		r, _, err := (&dns.Client{Timeout: 5 * time.Second}).Exchange(m, a)
		if err != nil || r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
			t.Fatalf("example.org at %s: %v %v", a, err, r)
		}
	}
	if n := u.Upstream.Questions("example.org"); n != 1 {
		t.Errorf("the upstream was asked %d times for example.org, want once (one cache for both addresses)", n)
	}
}
