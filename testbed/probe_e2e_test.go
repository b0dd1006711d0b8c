package testbed_test

import (
	"bufio"
	"context"
	"io"
	"log"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chaos-unicorn/unicorn/capture"
	"github.com/chaos-unicorn/unicorn/rules"
	"github.com/chaos-unicorn/unicorn/testbed"
)

// The e2e world's own services, added to the Topology's fake internet:
// a Status node speaking the probe's protocol, the community node, and
// the price API (HTTPS, min-api.cryptocompare.com).
const (
	e2eBoot      = "203.0.113.21"
	e2eCommunity = "203.0.113.50"
	e2ePrices    = "203.0.113.30"
)

// e2eRules is cud-2019 on the Topology's addresses: Infura fails fast,
// Etherscan hangs, the Status cluster is refused by address; the price API
// and the community node stay up.
const e2eRules = `scenario: cud-2019-e2e
services:
  infura: {domains: [infura.io]}
  etherscan: {domains: [etherscan.io]}
  status-cluster: {ips: [` + e2eBoot + `], ports: [30303]}
rules:
  - {service: infura, action: reject}
  - {service: etherscan, action: blackhole}
  - {service: status-cluster, action: reject}
`

// e2eWorld is a Topology with the probe's extra services and a capture on
// the fake internet's side of the router.
type e2eWorld struct {
	topo  *testbed.Topology
	rules string // path of e2eRules
}

func newE2EWorld(t *testing.T) *e2eWorld {
	topo := testbed.NewTopology(t) // skips when namespaces cannot be made
	for _, a := range []string{e2eBoot, e2eCommunity, e2ePrices} {
		topo.Inet.IP(t, "addr", "add", a+"/32", "dev", "lo")
	}
	topo.DNS.Map("min-api.cryptocompare.com", netip.MustParseAddr(e2ePrices))
	for _, n := range []struct{ name, ip string }{{"boot-1", e2eBoot}, {testbed.CommunityName, e2eCommunity}} {
		var node *testbed.Node
		err := topo.Inet.Do(func() (err error) {
			node, err = testbed.StartNode(n.name, n.ip, testbed.NodePort)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { node.Close() })
	}
	l, err := topo.Inet.Listen("tcp", net.JoinHostPort(e2ePrices, "443"))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: testbed.Prices(), TLSConfig: testbed.TestCA().ServerConfig(), ErrorLog: log.New(io.Discard, "", 0)}
	go srv.ServeTLS(l, "", "")
	t.Cleanup(func() { srv.Close() })

	p := filepath.Join(t.TempDir(), "cud-e2e.yaml")
	if err := os.WriteFile(p, []byte(e2eRules), 0o644); err != nil {
		t.Fatal(err)
	}
	return &e2eWorld{topo: topo, rules: p}
}

func (w *e2eWorld) targets() []testbed.ProbeTarget {
	return []testbed.ProbeTarget{
		{Service: "infura", Kind: testbed.ProbeJSONRPC, URL: "https://mainnet.infura.io/v3/e2e"},
		{Service: "etherscan", Kind: testbed.ProbeHTTP, URL: "https://api.etherscan.io/api?module=account&action=txlist&address=0x01"},
		{Service: "prices", Kind: testbed.ProbeHTTP, URL: "https://min-api.cryptocompare.com/data/price?fsym=ETH&tsyms=USD"},
		{Service: "status-cluster", Kind: testbed.ProbeNode, Addr: net.JoinHostPort(e2eBoot, "30303"), UDP: true},
		{Service: "community", Kind: testbed.ProbeNode, Addr: net.JoinHostPort(e2eCommunity, "30303"), UDP: true},
		{Service: "example", Kind: testbed.ProbeHTTP, URL: "https://example.org/"},
	}
}

// probe runs the probe as the phone, with dns as its resolver.
func (w *e2eWorld) probe(dns string) map[string]testbed.ProbeResult {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return outcomes(testbed.Probe(ctx, testbed.ProbeConfig{
		Targets: w.targets(), DNS: dns, Dial: w.topo.Phone.DialContext, RootCAs: testbed.TestCA().Pool(),
		Timeout: 2 * time.Second, Attempts: 2, Backoff: 200 * time.Millisecond,
	}))
}

// liveCapture captures on the fake internet's interface to the router,
// with unicorn's capture package, until stop.
type liveCapture struct {
	path   string
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

func (w *e2eWorld) capture(t *testing.T) *liveCapture {
	c := &liveCapture{path: filepath.Join(t.TempDir(), "inet.pcap"), done: make(chan error, 1)}
	f, err := os.Create(c.path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	started := make(chan struct{})
	var startOnce sync.Once
	go func() {
		bw := bufio.NewWriter(f)
		err := w.topo.Inet.Do(func() error {
			_, err := capture.Live(ctx, bw, capture.LiveOptions{Iface: "eth0", Progress: func(int64, int64) {
				startOnce.Do(func() { close(started) })
			}})
			return err
		})
		startOnce.Do(func() { close(started) })
		if ferr := bw.Flush(); err == nil {
			err = ferr
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		c.done <- err
	}()
	<-started
	t.Cleanup(func() { c.stop(t) })
	return c
}

func (c *liveCapture) stop(t *testing.T) {
	c.once.Do(func() {
		c.cancel()
		if err := <-c.done; err != nil {
			t.Errorf("capture: %v", err)
		}
	})
}

// report reads the capture with the scenario's rules, as `unicorn report
// --rules` would.
func (w *e2eWorld) report(t *testing.T, c *liveCapture, rulesPath string) *capture.Report {
	c.stop(t)
	var set *rules.Set
	var err error
	if rulesPath == "" {
		set, err = rules.Builtin()
	} else {
		set, err = rules.Load(rulesPath)
	}
	if err != nil {
		t.Fatal(err)
	}
	eng, err := rules.NewEngine(set, set.Defaults())
	if err != nil {
		t.Fatal(err)
	}
	a, err := capture.NewAnalyzer(capture.Options{Engine: eng})
	if err != nil {
		t.Fatal(err)
	}
	f, err := capture.Open(c.path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := a.ReadFrom(f); err != nil {
		t.Fatal(err)
	}
	return a.Report()
}

func leakList(r *capture.Report) string {
	var b strings.Builder
	for _, l := range r.Leaks {
		b.WriteString("\n  " + l.Device.String() + " " + l.Dest + " " + l.Name + ": " + l.Reason)
	}
	return b.String()
}

// TestScenarioEndToEnd: the probe as the phone, behind unicorn in router
// mode with cud-2019 on the Topology, gets the outcome the scenario
// promises per service, and a capture on the fake internet's side shows
// no leak. Without unicorn (plain forwarding) every service works and
// the same report finds the leaks: the test can fail.
func TestScenarioEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping the end-to-end scenario test in network namespaces")
	}
	t.Run("unicorn off", func(t *testing.T) {
		w := newE2EWorld(t)
		w.topo.Forward(t)
		c := w.capture(t)
		got := w.probe(net.JoinHostPort(testbed.ResolverAddr4, "53"))
		for _, s := range []string{"infura", "etherscan", "prices", "status-cluster", "community", "example"} {
			if got[s].Outcome != testbed.Worked {
				t.Errorf("unicorn off: %s %s (%s), want worked", s, got[s].Outcome, got[s].Detail)
			}
		}
		r := w.report(t, c, w.rules)
		// The handshakes with Infura and Etherscan and the packets to the
		// bootnode (TCP and UDP) got through.
		t.Logf("unicorn off: %d leaks on the internet side:%s", r.LeakCount(), leakList(r))
		if r.LeakCount() < 4 {
			t.Errorf("unicorn off: %d leaks, want at least 4 (infura, etherscan, status-cluster tcp and udp):%s", r.LeakCount(), leakList(r))
		}
	})
	t.Run("cud-2019 in router mode", func(t *testing.T) {
		w := newE2EWorld(t)
		w.topo.StartRouter(t, "--rules", w.rules)
		c := w.capture(t)
		got := w.probe(net.JoinHostPort(testbed.RouterLAN4, "53"))
		want := map[string]testbed.Outcome{
			"infura": testbed.FailedFast, "etherscan": testbed.Hung, "status-cluster": testbed.FailedFast,
			"prices": testbed.Worked, "community": testbed.Worked, "example": testbed.Worked,
		}
		for s, o := range want {
			if got[s].Outcome != o {
				t.Errorf("router mode: %s %s (%s), want %s", s, got[s].Outcome, got[s].Detail, o)
			}
		}
		for _, s := range w.targets() {
			t.Logf("router mode: %-14s %-11s %s", s.Service, got[s.Service].Outcome, strings.Join(strings.Fields(got[s.Service].Detail), " "))
		}
		r := w.report(t, c, w.rules)
		if r.LeakCount() != 0 {
			t.Errorf("router mode: %d leaks on the internet side:%s", r.LeakCount(), leakList(r))
		}
		// The capture saw the allowed traffic: it is not empty by accident.
		connected := 0
		for _, d := range r.Devices {
			for _, g := range d.Services {
				connected += g.Connected
			}
		}
		if connected < 3 {
			t.Errorf("the internet-side capture shows %d connections, want the prices, community and example ones", connected)
		}
	})
	// The built-in cud-2019 as it ships: Infura and Etherscan fail fast;
	// the Status cluster it names is the real fleet, not on this fake
	// internet, so the node here stays reachable like every other service.
	t.Run("built-in cud-2019 in router mode", func(t *testing.T) {
		w := newE2EWorld(t)
		w.topo.StartRouter(t) // no --rules: the built-in scenarios
		c := w.capture(t)
		got := w.probe(net.JoinHostPort(testbed.RouterLAN4, "53"))
		want := map[string]testbed.Outcome{
			"infura": testbed.FailedFast, "etherscan": testbed.FailedFast, "status-cluster": testbed.Worked,
			"prices": testbed.Worked, "community": testbed.Worked, "example": testbed.Worked,
		}
		for s, o := range want {
			if got[s].Outcome != o {
				t.Errorf("built-in: %s %s (%s), want %s", s, got[s].Outcome, got[s].Detail, o)
			}
		}
		if r := w.report(t, c, ""); r.LeakCount() != 0 {
			t.Errorf("built-in: %d leaks on the internet side:%s", r.LeakCount(), leakList(r))
		}
	})
}
