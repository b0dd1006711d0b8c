package testbed_test

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chaos-unicorn/unicorn/rules"
	"github.com/chaos-unicorn/unicorn/testbed"
	"github.com/miekg/dns"
)

// TestBuiltinDNS runs the binary with no --rules (the built-in cud-2019)
// and asks its DNS front end over UDP and TCP.
func TestBuiltinDNS(t *testing.T) {
	t.Parallel()
	w := testbed.NewWorld(t)
	u := w.Start(t)
	if !strings.Contains(u.Banner[0], rules.BuiltinDefault) {
		t.Errorf("banner %q does not name the scenario %s", u.Banner[0], rules.BuiltinDefault)
	}

	blocked := []struct{ name, service string }{
		{"mainnet.infura.io", "infura"},
		{"Ropsten.INFURA.io", "infura"}, // any subdomain, any case
		{"api.etherscan.io", "etherscan"},
	}
	for _, network := range []string{"udp", "tcp"} {
		t.Run(network, func(t *testing.T) {
			for _, b := range blocked {
				r := ask(t, u.DNS, network, b.name, dns.TypeA)
				if r.Rcode != dns.RcodeNameError || len(r.Answer) != 0 || !hasSOA(r) {
					t.Errorf("%s: rcode %s, %d answers, SOA %v; want NXDOMAIN, no answer, an SOA",
						b.name, dns.RcodeToString[r.Rcode], len(r.Answer), hasSOA(r))
				}
				want := builtinRef(t, b.service)
				e := ede(r)
				if e == nil || e.InfoCode != dns.ExtendedErrorCodeBlocked || e.ExtraText != want {
					t.Errorf("%s: EDE %v, want code %d (Blocked) with text %q", b.name, e, dns.ExtendedErrorCodeBlocked, want)
				}
			}
			r := ask(t, u.DNS, network, "example.org", dns.TypeA)
			if r.Rcode != dns.RcodeSuccess || !slices.Equal(answerAddrs(r), addrStrings(w.DNS, "example.org")) {
				t.Errorf("example.org: rcode %s, answers %v; want the fake's NOERROR %v",
					dns.RcodeToString[r.Rcode], answerAddrs(r), addrStrings(w.DNS, "example.org"))
			}
			if e := ede(r); e != nil {
				t.Errorf("example.org: forwarded answer carries EDE %v", e)
			}
		})
	}

	for _, b := range blocked {
		if n := w.DNS.Questions(b.name); n != 0 {
			t.Errorf("the upstream was asked %d time(s) about blocked %s", n, b.name)
		}
	}
	if w.DNS.Questions("example.org") == 0 {
		t.Error("the upstream was never asked about example.org: where did the answer come from?")
	}
	l := u.WaitLog(t, map[string]string{
		"msg": "dns decision", "component": "dns", "name": "mainnet.infura.io.",
		"client": "127.0.0.1", "scenario": rules.BuiltinDefault, "action": "reject", "service": "infura",
	})
	if ref := builtinRef(t, "infura"); !strings.Contains(ref, "("+l.Str("rule_pos")+")") || l.Str("rule_pos") == "" {
		t.Errorf("log line rule_pos %q, want the position in %q", l.Str("rule_pos"), ref)
	}
}

// TestBuiltinProxy runs the binary with no --rules and sends requests
// through its proxy with a real http.Client.
func TestBuiltinProxy(t *testing.T) {
	t.Parallel()
	w := testbed.NewWorld(t)
	u := w.Start(t)
	c := newProxyClient(u)

	t.Run("plain HTTP blocked", func(t *testing.T) {
		f := c.get("http://api.etherscan.io/")
		if f.err != nil {
			t.Fatal(f.err)
		}
		ref := builtinRef(t, "etherscan")
		if f.resp.StatusCode != http.StatusForbidden {
			t.Errorf("status %d, want 403", f.resp.StatusCode)
		}
		if got := f.resp.Header.Get("X-Unicorn-Rule"); got != ref {
			t.Errorf("X-Unicorn-Rule %q, want %q", got, ref)
		}
		if got := f.resp.Header.Get("X-Unicorn-Scenario"); got != rules.BuiltinDefault {
			t.Errorf("X-Unicorn-Scenario %q, want %q", got, rules.BuiltinDefault)
		}
		if !strings.Contains(f.body, ref) || !strings.Contains(f.body, "api.etherscan.io") {
			t.Errorf("body %q does not name the rule %q and the host", f.body, ref)
		}
		u.WaitLog(t, map[string]string{"msg": "proxy decision", "layer": "http", "target": "api.etherscan.io:80",
			"client": "127.0.0.1", "scenario": rules.BuiltinDefault, "action": "reject"})
	})

	t.Run("CONNECT blocked at once", func(t *testing.T) {
		f := c.get("https://mainnet.infura.io/")
		if f.err == nil {
			t.Fatalf("request succeeded with status %d", f.resp.StatusCode)
		}
		if f.elapsed > time.Second {
			t.Errorf("the refusal took %v, want well under 1s", f.elapsed)
		}
		status, h := c.lastConnect()
		if status != http.StatusForbidden || h.Get("X-Unicorn-Rule") != builtinRef(t, "infura") {
			t.Errorf("CONNECT answer %d with rule %q, want 403 naming %q", status, h.Get("X-Unicorn-Rule"), builtinRef(t, "infura"))
		}
	})

	for _, b := range []string{"api.etherscan.io", "mainnet.infura.io"} {
		if n := w.DNS.Questions(b); n != 0 {
			t.Errorf("the proxy resolved blocked %s %d time(s)", b, n)
		}
	}

	t.Run("allowed plain HTTP", func(t *testing.T) {
		f := c.get(fmt.Sprintf("http://example.org:%s/", port(t, w.Site)))
		if f.err != nil {
			t.Fatal(f.err)
		}
		if f.resp.StatusCode != http.StatusOK || f.body != testbed.SiteBody {
			t.Errorf("got %d %q, want 200 and the fake's body %q", f.resp.StatusCode, f.body, testbed.SiteBody)
		}
	})

	t.Run("allowed CONNECT to TLS", func(t *testing.T) {
		f := c.get(fmt.Sprintf("https://example.org:%s/", port(t, w.SiteTLS)))
		if f.err != nil {
			t.Fatal(f.err)
		}
		if status, _ := c.lastConnect(); status != http.StatusOK {
			t.Errorf("CONNECT answered %d, want 200", status)
		}
		if f.resp.StatusCode != http.StatusOK || f.body != testbed.SiteBody {
			t.Errorf("got %d %q, want 200 and the fake's body %q", f.resp.StatusCode, f.body, testbed.SiteBody)
		}
		if f.resp.TLS == nil || f.resp.TLS.PeerCertificates[0].Subject.CommonName != "example.org" {
			t.Errorf("TLS state %v: want the fake's certificate for example.org", f.resp.TLS)
		}
	})
}

// addrStrings returns the addresses the fake resolver maps name to.
func addrStrings(d *testbed.DNS, name string) []string {
	var out []string
	for _, a := range d.Lookup(name) {
		if a.Is4() {
			out = append(out, a.String())
		}
	}
	return out
}
