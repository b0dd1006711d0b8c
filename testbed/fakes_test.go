package testbed_test

import (
	"crypto/tls"
	"encoding/json"
	"io"
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

// The fakes are tested directly, without unicorn, so that an end-to-end
// failure points at unicorn and not at the testbed.

func TestFakeDNS(t *testing.T) {
	t.Parallel()
	d := testbed.NewDNS().
		Map("Name.Test", netip.MustParseAddr("127.0.0.5"), netip.MustParseAddr("::1"))
	addr, cleanup := d.Start(t)
	defer cleanup()

	for _, network := range []string{"udp", "tcp"} {
		r := ask(t, addr, network, "name.test", dns.TypeA)
		if r.Rcode != dns.RcodeSuccess || !slices.Equal(answerAddrs(r), []string{"127.0.0.5"}) {
			t.Errorf("%s A name.test: rcode %s, answers %v; want NOERROR [127.0.0.5]", network, dns.RcodeToString[r.Rcode], answerAddrs(r))
		}
		r = ask(t, addr, network, "NAME.test", dns.TypeAAAA)
		if !slices.Equal(answerAddrs(r), []string{"::1"}) {
			t.Errorf("%s AAAA: answers %v, want [::1]", network, answerAddrs(r))
		}
		r = ask(t, addr, network, "unknown.test", dns.TypeA)
		if r.Rcode != dns.RcodeNameError || !hasSOA(r) {
			t.Errorf("%s unknown name: rcode %s, SOA %v; want NXDOMAIN with SOA", network, dns.RcodeToString[r.Rcode], hasSOA(r))
		}
	}
	d.Map("late.test", netip.MustParseAddr("127.0.0.6"))
	if r := ask(t, addr, "udp", "late.test", dns.TypeA); !slices.Equal(answerAddrs(r), []string{"127.0.0.6"}) {
		t.Errorf("name mapped after Start: answers %v", answerAddrs(r))
	}
	if got := d.Questions("name.test."); got != 4 {
		t.Errorf("Questions(name.test) = %d, want 4", got)
	}
	if got := d.Questions("unknown.test"); got != 2 {
		t.Errorf("Questions(unknown.test) = %d, want 2", got)
	}
	if got := d.Total(); got != 7 {
		t.Errorf("Total() = %d, want 7", got)
	}
}

func TestFakeInfura(t *testing.T) {
	t.Parallel()
	addr, _ := testbed.ServeHTTP(t, "127.0.0.1", testbed.Infura())
	post := func(body string) (int, string) {
		t.Helper()
		resp, err := http.Post("http://"+addr+"/v3/testbed", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, strings.TrimSpace(string(b))
	}
	tests := []struct {
		name, body, want string
	}{
		{"call", `{"jsonrpc":"2.0","method":"eth_blockNumber","id":1}`,
			`{"jsonrpc":"2.0","id":1,"result":"` + testbed.InfuraBlockNumber + `"}`},
		// What a wallet asks (issue: eth_getBalance, eth_call, eth_sendRawTransaction).
		{"balance", `{"jsonrpc":"2.0","method":"eth_getBalance","params":["0x01","latest"],"id":4}`,
			`{"jsonrpc":"2.0","id":4,"result":"0xde0b6b3a7640000"}`},
		{"eth_call", `{"jsonrpc":"2.0","method":"eth_call","params":[{"to":"0x01","data":"0x70a08231"},"latest"],"id":5}`,
			`{"jsonrpc":"2.0","id":5,"result":"0x00000000000000000000000000000000000000000000003635c9adc5dea00000"}`},
		{"send", `{"jsonrpc":"2.0","method":"eth_sendRawTransaction","params":["0xf86c"],"id":"tx"}`,
			`{"jsonrpc":"2.0","id":"tx","result":"0x5c504ed432cb51138bcf09aa5e8a410dd4a1e204ef84bfed1be16dfba1b22060"}`},
		{"batch", `[{"jsonrpc":"2.0","method":"eth_chainId","id":"a"},{"jsonrpc":"2.0","method":"net_version","id":2}]`,
			`[{"jsonrpc":"2.0","id":"a","result":"0x1"},{"jsonrpc":"2.0","id":2,"result":"1"}]`},
		{"unknown method", `{"jsonrpc":"2.0","method":"eth_nosuch","id":3}`,
			`{"jsonrpc":"2.0","id":3,"error":{"code":-32601,"message":"the method eth_nosuch does not exist/is not available"}}`},
		{"not JSON", `{"jsonrpc":`, `{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"parse error"}}`},
		{"empty batch", `[]`, `{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"invalid request: empty batch"}}`},
	}
	for _, tc := range tests {
		if code, got := post(tc.body); code != http.StatusOK || got != tc.want {
			t.Errorf("%s: %d %s\nwant 200 %s", tc.name, code, got, tc.want)
		}
	}
	resp, err := http.Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET: status %d, want 405", resp.StatusCode)
	}
}

func TestFakeEtherscan(t *testing.T) {
	t.Parallel()
	addr, _ := testbed.ServeHTTPS(t, "127.0.0.1", testbed.Etherscan())
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: testbed.TestCA().ClientConfig()}}
	get := func(query string) testbed.EtherscanReply {
		t.Helper()
		resp, err := c.Get("https://" + addr + "/api?" + query)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var r testbed.EtherscanReply
		if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
			t.Fatal(err)
		}
		return r
	}
	const me = "0x00000000000000000000000000000000000000aa"
	r := get("module=account&action=txlist&address=" + me + "&sort=desc")
	txs, _ := r.Result.([]any)
	if r.Status != "1" || r.Message != "OK" || len(txs) != 2 {
		t.Fatalf("txlist: %+v, want status 1, OK and two transactions", r)
	}
	if tx := txs[0].(map[string]any); tx["to"] != me || tx["txreceipt_status"] != "1" {
		t.Errorf("first transaction %v: want to=%s, txreceipt_status=1", tx, me)
	}
	if r := get("module=nosuch"); r.Status != "0" || r.Message != "NOTOK" {
		t.Errorf("bad module: %+v, want status 0, NOTOK", r)
	}
}

// TestFakeTLSByName checks that a client trusting TestCA reaches a TLS fake
// by any name (the certificate follows SNI) and by address.
func TestFakeTLSByName(t *testing.T) {
	t.Parallel()
	addr, _ := testbed.ServeHTTPS(t, "127.0.0.1", testbed.Site(testbed.SiteBody))
	for _, name := range []string{"example.org", "mainnet.infura.io", ""} {
		conf := testbed.TestCA().ClientConfig()
		conf.ServerName = name
		if name == "" {
			conf.ServerName = "127.0.0.1"
		}
		d := tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second}, Config: conf}
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Errorf("TLS to %s as %q: %v", addr, conf.ServerName, err)
			continue
		}
		c.Close()
	}
	untrusting := tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second}, Config: &tls.Config{ServerName: "example.org"}}
	if c, err := untrusting.Dial("tcp", addr); err == nil {
		c.Close()
		t.Error("a client without the test CA trusted the fake")
	}
}
