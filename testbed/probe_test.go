package testbed_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chaos-unicorn/unicorn/testbed"
)

// probeWorld is a World with the rest of the fake internet the probe tries:
// the price API, a Status bootnode on 127.0.0.2 and the community node on
// 127.0.0.3 (TCP and UDP each).
type probeWorld struct {
	*testbed.World
	Prices    string // "127.0.0.1:port" of the price API
	Boot      *testbed.Node
	Community *testbed.Node
}

func newProbeWorld(t *testing.T) *probeWorld {
	t.Helper()
	w := &probeWorld{World: testbed.NewWorld(t)}
	w.Prices, _ = testbed.ServeHTTP(t, "127.0.0.1", testbed.Prices())
	w.Boot = testbed.ServeNode(t, "boot-1", "127.0.0.2")
	w.Community = testbed.ServeCommunity(t, "127.0.0.3")
	return w
}

// targets are the services the app of 2019 depends on, by name as the app
// knows them, at the fake internet's ports.
func (w *probeWorld) targets(t *testing.T) []testbed.ProbeTarget {
	return []testbed.ProbeTarget{
		{Service: "infura", Kind: testbed.ProbeJSONRPC, URL: "http://mainnet.infura.io:" + port(t, w.Infura) + "/v3/probe"},
		{Service: "etherscan", Kind: testbed.ProbeHTTP, URL: "http://api.etherscan.io:" + port(t, w.Etherscan) + "/api?module=account&action=txlist&address=0x01"},
		{Service: "prices", Kind: testbed.ProbeHTTP, URL: "http://min-api.cryptocompare.com:" + port(t, w.Prices) + "/data/price?fsym=ETH&tsyms=USD"},
		{Service: "status-cluster", Kind: testbed.ProbeNode, Addr: w.Boot.Addr.String(), UDP: true},
		{Service: "community", Kind: testbed.ProbeNode, Addr: w.Community.Addr.String(), UDP: true},
	}
}

func outcomes(rs []testbed.ProbeResult) map[string]testbed.ProbeResult {
	m := map[string]testbed.ProbeResult{}
	for _, r := range rs {
		m[r.Service] = r
	}
	return m
}

func TestProbeFakesDirect(t *testing.T) {
	t.Parallel()
	w := newProbeWorld(t)
	rs := testbed.Probe(context.Background(), testbed.ProbeConfig{Targets: w.targets(t), DNS: w.DNSAddr, Timeout: 3 * time.Second})
	for _, r := range rs {
		if r.Outcome != testbed.Worked || r.Attempts != 1 {
			t.Errorf("%s: %s after %d attempts (%s), want worked at once", r.Service, r.Outcome, r.Attempts, r.Detail)
		}
	}
	got := outcomes(rs)
	if d := got["infura"].Detail; !strings.Contains(d, testbed.InfuraBlockNumber) {
		t.Errorf("infura answered %q, want the block number", d)
	}
	if d := got["prices"].Detail; !strings.Contains(d, `"USD":142.52`) {
		t.Errorf("prices answered %q", d)
	}
	if d := got["community"].Detail; d != "tcp WELCOME community, udp PONG community" {
		t.Errorf("community answered %q", d)
	}
	if w.Boot.Hellos() != 1 || w.Boot.Pings() < 1 {
		t.Errorf("bootnode saw %d hellos, %d pings; want 1 and at least 1", w.Boot.Hellos(), w.Boot.Pings())
	}
}

// TestProbeOutcomes: a refused port fails fast, a silent server hangs
// until the timeout, a name that does not resolve fails fast; each is
// retried with back-off.
func TestProbeOutcomes(t *testing.T) {
	t.Parallel()
	w := newProbeWorld(t)
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := closed.Addr().String()
	closed.Close()
	silent, err := net.Listen("tcp", "127.0.0.1:0") // accepts (the kernel does), never answers
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()

	const timeout = 300 * time.Millisecond
	rs := testbed.Probe(context.Background(), testbed.ProbeConfig{
		DNS: w.DNSAddr, Timeout: timeout, Attempts: 2, Backoff: 100 * time.Millisecond,
		Targets: []testbed.ProbeTarget{
			{Service: "refused", Kind: testbed.ProbeNode, Addr: closedAddr},
			{Service: "silent", Kind: testbed.ProbeJSONRPC, URL: "http://" + silent.Addr().String() + "/"},
			{Service: "nxdomain", Kind: testbed.ProbeHTTP, URL: "http://nosuch.example.invalid:" + port(t, w.Site) + "/"},
		},
	})
	got := outcomes(rs)
	if r := got["refused"]; r.Outcome != testbed.FailedFast || r.Attempts != 2 || r.Elapsed > timeout+2*time.Second {
		t.Errorf("refused: %+v, want failed fast twice", r)
	}
	if r := got["silent"]; r.Outcome != testbed.Hung || r.Attempts != 2 || r.Elapsed < 2*timeout {
		t.Errorf("silent: %+v, want hung twice (>= %s)", r, 2*timeout)
	}
	if r := got["nxdomain"]; r.Outcome != testbed.FailedFast || !strings.Contains(r.Detail, "no such host") {
		t.Errorf("nxdomain: %+v, want failed fast with no such host", r)
	}
}

// cudTestbedRules is cud-2019 mapped onto the fake internet: Infura fails
// fast, Etherscan hangs, the Status cluster (by address) is refused; the
// price API and the community node stay up.
const cudTestbedRules = `scenario: cud-2019-testbed
services:
  infura: {domains: [infura.io]}
  etherscan: {domains: [etherscan.io]}
  status-cluster: {ips: [127.0.0.2]}
rules:
  - {service: infura, action: reject}
  - {service: etherscan, action: blackhole}
  - {service: status-cluster, action: reject}
`

const allowAllRules = `scenario: open
rules:
  - {action: allow}
`

func TestProbeThroughUnicorn(t *testing.T) {
	t.Parallel()
	w := newProbeWorld(t)
	dir := t.TempDir()
	cud, open := filepath.Join(dir, "cud.yaml"), filepath.Join(dir, "open.yaml")
	if err := os.WriteFile(cud, []byte(cudTestbedRules), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(open, []byte(allowAllRules), 0o644); err != nil {
		t.Fatal(err)
	}
	const timeout = 2 * time.Second
	probe := func(u *testbed.Unicorn) map[string]testbed.ProbeResult {
		rs := testbed.Probe(context.Background(), testbed.ProbeConfig{
			Targets: w.targets(t), Proxy: u.ProxyURL, Timeout: timeout, Attempts: 2, Backoff: 200 * time.Millisecond,
		})
		return outcomes(rs)
	}

	// With everything allowed, every service works: the test can fail.
	got := probe(w.Start(t, "--rules", open))
	for _, s := range []string{"infura", "etherscan", "prices", "status-cluster", "community"} {
		if got[s].Outcome != testbed.Worked {
			t.Errorf("allow-all: %s %s (%s), want worked", s, got[s].Outcome, got[s].Detail)
		}
	}

	got = probe(w.Start(t, "--rules", cud))
	want := map[string]testbed.Outcome{
		"infura": testbed.FailedFast, "etherscan": testbed.Hung, "status-cluster": testbed.FailedFast,
		"prices": testbed.Worked, "community": testbed.Worked,
	}
	for s, o := range want {
		if got[s].Outcome != o {
			t.Errorf("cud-2019-testbed: %s %s (%s), want %s", s, got[s].Outcome, got[s].Detail, o)
		}
	}
	if r := got["infura"]; !strings.Contains(r.Detail, "403") || r.Elapsed > timeout {
		t.Errorf("infura: %+v, want a 403 well before the timeout", r)
	}
	if r := got["etherscan"]; r.Elapsed < 2*timeout {
		t.Errorf("etherscan hung only %s, want both attempts to time out (%s)", r.Elapsed, 2*timeout)
	}
}
