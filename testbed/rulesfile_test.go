package testbed_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chaos-unicorn/unicorn/testbed"
	"github.com/miekg/dns"
)

// blackholeHold is the --blackhole-timeout TestRulesFile starts unicorn with.
const blackholeHold = 500 * time.Millisecond

// holdTolerance is how much later than blackholeHold a held client may
// see its connection close: a loaded machine running -race is slow.
const holdTolerance = 1500 * time.Millisecond

// rulesFile is the scenario TestRulesFile writes; %d is the blocked port of
// 127.0.0.2. Rule indexes are referred to as rule* below.
const rulesFile = `scenario: e2e
description: one rule per behaviour the end-to-end tests check
rules:
  - {hosts: [hang.test], action: blackhole}
  - {hosts: [spoofed.test], action: spoof, addresses: [127.0.0.3]}
  - {hosts: [broken.test], action: reject, rcode: servfail}
  - {hosts: [lab-only.test], action: reject, clients: [192.0.2.0/24]}
  - {ips: [127.0.0.2], ports: [%d], action: reject}
`

const (
	ruleBlackhole = iota
	ruleSpoof
	ruleServfail
	ruleLabOnly
	ruleIPPort
)

// TestRulesFile starts the binary with a rules file written by the test and
// checks each action at the DNS and proxy front ends.
func TestRulesFile(t *testing.T) {
	t.Parallel()
	needLoopbackAddrs(t, "127.0.0.2", "127.0.0.3")
	w := testbed.NewWorld(t)
	const (
		blockedBody = "behind the blocked port\n"
		openBody    = "on the open port of the same address\n"
		spoofBody   = "the spoofed destination\n"
	)
	blockedSite, _ := testbed.ServeHTTPS(t, "127.0.0.2", testbed.Site(blockedBody))
	openSite, _ := testbed.ServeHTTPS(t, "127.0.0.2", testbed.Site(openBody))
	spoofSite, _ := testbed.ServeHTTP(t, "127.0.0.3", testbed.Site(spoofBody))
	lo := netip.MustParseAddr("127.0.0.1")
	for _, n := range []string{"hang.test", "spoofed.test", "broken.test", "lab-only.test"} {
		w.DNS.Map(n, lo)
	}
	w.DNS.Map("blocked-ip.test", netip.MustParseAddr("127.0.0.2"))

	var blockedPort int
	fmt.Sscan(port(t, blockedSite), &blockedPort)
	file := writeFile(t, "e2e.yaml", fmt.Sprintf(rulesFile, blockedPort))
	refs := fileRefs(t, file)
	u := w.Start(t, "--rules", file, "--blackhole-timeout", blackholeHold.String())
	c := newProxyClient(u)

	t.Run("blackhole", func(t *testing.T) {
		t.Run("DNS gets no answer", func(t *testing.T) {
			t.Parallel()
			for _, network := range []string{"udp", "tcp"} {
				_, err := exchange(u.DNS, network, "hang.test", dns.TypeA, 300*time.Millisecond)
				var ne net.Error
				if !errors.As(err, &ne) || !ne.Timeout() {
					t.Errorf("%s: got %v, want a timeout", network, err)
				}
			}
			if n := w.DNS.Questions("hang.test"); n != 0 {
				t.Errorf("the upstream was asked %d time(s) about hang.test", n)
			}
			u.WaitLog(t, map[string]string{"msg": "dns decision", "name": "hang.test.", "action": "blackhole", "scenario": "e2e", "rule_pos": rulePos(refs[ruleBlackhole])})
		})
		for _, url := range []string{"http://hang.test/", "https://hang.test/"} {
			t.Run("proxy "+url, func(t *testing.T) {
				t.Parallel()
				f := c.get(url)
				if f.err == nil {
					t.Fatalf("got %d %q, want an error once the hold ends", f.resp.StatusCode, f.body)
				}
				if f.elapsed < blackholeHold-50*time.Millisecond || f.elapsed > blackholeHold+holdTolerance {
					t.Errorf("error %v after %v, want after about %v", f.err, f.elapsed, blackholeHold)
				}
			})
		}
	})

	t.Run("spoof", func(t *testing.T) {
		r := ask(t, u.DNS, "udp", "spoofed.test", dns.TypeA)
		if r.Rcode != dns.RcodeSuccess || !slices.Equal(answerAddrs(r), []string{"127.0.0.3"}) {
			t.Errorf("DNS: rcode %s, answers %v; want NOERROR [127.0.0.3]", dns.RcodeToString[r.Rcode], answerAddrs(r))
		}
		f := c.get(fmt.Sprintf("http://spoofed.test:%s/", port(t, spoofSite)))
		if f.err != nil || f.resp.StatusCode != http.StatusOK || f.body != spoofBody {
			t.Errorf("proxy: %v %q, want 200 from 127.0.0.3: %q", f.err, f.body, spoofBody)
		}
		if n := w.DNS.Questions("spoofed.test"); n != 0 {
			t.Errorf("the upstream was asked %d time(s) about spoofed.test", n)
		}
	})

	t.Run("reject with servfail", func(t *testing.T) {
		for _, network := range []string{"udp", "tcp"} {
			r := ask(t, u.DNS, network, "broken.test", dns.TypeA)
			e := ede(r)
			if r.Rcode != dns.RcodeServerFailure || e == nil || e.ExtraText != refs[ruleServfail] {
				t.Errorf("%s: rcode %s, EDE %v; want SERVFAIL with EDE text %q", network, dns.RcodeToString[r.Rcode], e, refs[ruleServfail])
			}
		}
		f := c.get("http://broken.test/")
		if f.err != nil || f.resp.StatusCode != http.StatusForbidden || f.resp.Header.Get("X-Unicorn-Rule") != refs[ruleServfail] {
			t.Errorf("proxy: %v, want 403 naming %q", describe(f), refs[ruleServfail])
		}
	})

	t.Run("clients elsewhere do not affect loopback", func(t *testing.T) {
		r := ask(t, u.DNS, "udp", "lab-only.test", dns.TypeA)
		if r.Rcode != dns.RcodeSuccess || !slices.Equal(answerAddrs(r), []string{"127.0.0.1"}) {
			t.Errorf("DNS: rcode %s, answers %v; want the fake's [127.0.0.1]", dns.RcodeToString[r.Rcode], answerAddrs(r))
		}
		if w.DNS.Questions("lab-only.test") == 0 {
			t.Error("DNS: the question was not forwarded")
		}
		f := c.get(fmt.Sprintf("http://lab-only.test:%s/", port(t, w.Site)))
		if f.err != nil || f.resp.StatusCode != http.StatusOK || f.body != testbed.SiteBody {
			t.Errorf("proxy: %v, want 200 with the fake's body", describe(f))
		}
		// The rule is live: for a device in 192.0.2.0/24 it does apply.
		out := testbed.Run(t, "explain", "--rules", file, "--client", "192.0.2.7", "lab-only.test")
		if out.Code != 0 || !strings.Contains(out.Stdout, "reject by "+refs[ruleLabOnly]) {
			t.Errorf("explain --client 192.0.2.7: exit %d, output:\n%s\nwant reject by %q", out.Code, out.Stdout, refs[ruleLabOnly])
		}
	})

	t.Run("address and port", func(t *testing.T) {
		for _, target := range []string{"127.0.0.2", "blocked-ip.test"} {
			f := c.get(fmt.Sprintf("https://%s:%d/", target, blockedPort))
			status, h := c.lastConnect()
			if f.err == nil || status != http.StatusForbidden || h.Get("X-Unicorn-Rule") != refs[ruleIPPort] {
				t.Errorf("CONNECT %s:%d: %v, CONNECT answered %d naming %q; want refused with 403 naming %q",
					target, blockedPort, describe(f), status, h.Get("X-Unicorn-Rule"), refs[ruleIPPort])
			}
			if f.elapsed > time.Second {
				t.Errorf("CONNECT %s: the refusal took %v, want well under 1s", target, f.elapsed)
			}
		}
		f := c.get(fmt.Sprintf("https://127.0.0.2:%s/", port(t, openSite)))
		if f.err != nil || f.resp.StatusCode != http.StatusOK || f.body != openBody {
			t.Errorf("another port of 127.0.0.2: %v, want 200 %q", describe(f), openBody)
		}
	})

	t.Run("fakes relayed", func(t *testing.T) {
		f := c.do(mustRequest(http.MethodPost, fmt.Sprintf("http://mainnet.infura.io:%s/v3/testbed", port(t, w.Infura)),
			`[{"jsonrpc":"2.0","method":"eth_blockNumber","id":1},{"jsonrpc":"2.0","method":"eth_chainId","id":2}]`))
		want := `[{"jsonrpc":"2.0","id":1,"result":"` + testbed.InfuraBlockNumber + `"},{"jsonrpc":"2.0","id":2,"result":"0x1"}]`
		if f.err != nil || strings.TrimSpace(f.body) != want {
			t.Errorf("JSON-RPC batch through the proxy: %v, want %s", describe(f), want)
		}
		f = c.get(fmt.Sprintf("https://api.etherscan.io:%s/api?module=account&action=txlist&address=0xaa", port(t, w.EtherscanTLS)))
		var reply testbed.EtherscanReply
		if f.err != nil || json.Unmarshal([]byte(f.body), &reply) != nil || reply.Status != "1" {
			t.Errorf("Etherscan txlist through CONNECT: %v", describe(f))
		}
	})
}

// rulePos returns the "file:line" inside a rule reference
// "scenario rules[i] (file:line)".
func rulePos(ref string) string {
	_, pos, _ := strings.Cut(ref, "(")
	return strings.TrimSuffix(pos, ")")
}

// describe says what a request got, for failure messages.
func describe(f fetched) string {
	if f.err != nil {
		return fmt.Sprintf("error %v after %v", f.err, f.elapsed)
	}
	return fmt.Sprintf("%d %s rule=%q body=%q", f.resp.StatusCode, http.StatusText(f.resp.StatusCode), f.resp.Header.Get("X-Unicorn-Rule"), f.body)
}
