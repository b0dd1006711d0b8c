package testbed_test

import (
	"bufio"
	"context"
	"net"
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

// e2eBoot is the Status node of the e2e world (StartAppServices).
const e2eBoot = testbed.StatusNodeAddr4

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

// e2eWorld is a Topology with the app's services (StartAppServices) and a
// capture on the fake internet's side of the router.
type e2eWorld struct {
	topo    *testbed.Topology
	rules   string // path of e2eRules
	targets []testbed.ProbeTarget
}

func newE2EWorld(t *testing.T) *e2eWorld {
	topo := testbed.NewTopology(t) // skips when namespaces cannot be made
	targets := topo.StartAppServices(t)
	p := filepath.Join(t.TempDir(), "cud-e2e.yaml")
	if err := os.WriteFile(p, []byte(e2eRules), 0o644); err != nil {
		t.Fatal(err)
	}
	return &e2eWorld{topo: topo, rules: p, targets: targets}
}

// probe runs the probe as the phone, with dns as its resolver.
func (w *e2eWorld) probe(dns string) map[string]testbed.ProbeResult {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return outcomes(testbed.Probe(ctx, testbed.ProbeConfig{
		Targets: w.targets, DNS: dns, Dial: w.topo.Phone.DialContext, RootCAs: testbed.TestCA().Pool(),
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

// report reads the capture with the scenario's rules and active
// scenarios (none: the defaults), as `unicorn report --rules --scenario`
// would.
func (w *e2eWorld) report(t *testing.T, c *liveCapture, rulesPath string, active ...string) *capture.Report {
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
	if len(active) == 0 {
		active = set.Defaults()
	}
	eng, err := rules.NewEngine(set, active)
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

// mappedCatalogue writes the built-in scenario files into a folder, with
// the Status clusters of status-services.yaml moved onto the e2e world's
// bootnode (e2eBoot, port 30303), the same way e2eRules maps cud-2019:
// the scenarios' own rules are then tried as they ship.
func mappedCatalogue(t *testing.T) string {
	t.Helper()
	src := filepath.Join("..", "rules", "scenarios")
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".yaml") {
			continue
		}
		data, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if e.Name() == "status-services.yaml" {
			data = []byte(mapClusters(t, string(data)))
		}
		if err := os.WriteFile(filepath.Join(dir, e.Name()), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// mapClusters replaces the ports and addresses of the status-cluster-*
// services with the e2e bootnode's.
func mapClusters(t *testing.T, catalogue string) string {
	var out []string
	in, mapped := false, 0
	for _, l := range strings.Split(catalogue, "\n") {
		if strings.HasPrefix(l, "  ") && !strings.HasPrefix(l, "   ") {
			in = strings.HasPrefix(l, "  status-cluster-")
			out = append(out, l)
			if in {
				out = append(out, "    ports: [30303]", "    ips: ["+e2eBoot+"]")
				mapped++
			}
			continue
		}
		if in && (strings.HasPrefix(l, "    ports:") || strings.HasPrefix(l, "    ips:") || strings.HasPrefix(l, "      - ")) {
			continue
		}
		out = append(out, l)
	}
	if mapped != 2 {
		t.Fatalf("status-services.yaml: mapped %d status-cluster services, want 2 (2019 and 2020)", mapped)
	}
	return strings.Join(out, "\n")
}

// TestScenarioEndToEnd: the probe as the phone, behind unicorn in router
// mode, gets the outcome each scenario promises per service, and a
// capture on the fake internet's side shows no leak. The built-in
// scenarios run as they ship, with only the Status clusters' addresses
// moved onto the fake internet (mappedCatalogue). Without unicorn (plain
// forwarding) every service works and the same report finds the leaks:
// the test can fail. One topology serves every case: each router-mode
// case starts unicorn and stops it (which removes its table) when it ends.
func TestScenarioEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping the end-to-end scenario test in network namespaces")
	}
	w := newE2EWorld(t)
	catalogue := mappedCatalogue(t)
	const (
		ok   = testbed.Worked
		fast = testbed.FailedFast
		hung = testbed.Hung
	)
	t.Run("unicorn off", func(t *testing.T) {
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
	for _, tc := range []struct {
		name      string
		rules     string   // --rules; "" the built-ins unmapped
		scenarios []string // --scenario; none: the defaults
		want      map[string]testbed.Outcome
		// minConnected is how many connections the capture must show at
		// least: the allowed traffic got through, the capture is not
		// empty by accident.
		minConnected int
	}{
		// e2eRules: cud-2019 with Etherscan blackholed, so one service hangs.
		{"cud-2019 with a blackhole", w.rules, nil, map[string]testbed.Outcome{
			"infura": fast, "etherscan": hung, "status-cluster": fast, "prices": ok, "community": ok, "example": ok}, 3},
		{"cud-2019", catalogue, []string{"cud-2019"}, map[string]testbed.Outcome{
			"infura": fast, "etherscan": fast, "status-cluster": fast, "prices": ok, "community": ok, "example": ok}, 3},
		// The 2020 app read history through Infura: Etherscan stays up.
		{"cud-2020", catalogue, []string{"cud-2020"}, map[string]testbed.Outcome{
			"infura": fast, "etherscan": ok, "status-cluster": fast, "prices": ok, "community": ok, "example": ok}, 4},
		// As its file says: combined with cud-2019.
		{"cud-2019 and cud-2019-third-parties", catalogue, []string{"cud-2019", "cud-2019-third-parties"}, map[string]testbed.Outcome{
			"infura": fast, "etherscan": fast, "status-cluster": fast, "prices": fast, "community": ok, "example": ok}, 2},
		{"preset-censor-sni-reset", catalogue, []string{"preset-censor-sni-reset"}, map[string]testbed.Outcome{
			"infura": fast, "etherscan": fast, "status-cluster": ok, "prices": ok, "community": ok, "example": ok}, 4},
		// Poisoned names lead nowhere: the probe waits out its timeout.
		{"preset-censor-dns-poisoning", catalogue, []string{"preset-censor-dns-poisoning"}, map[string]testbed.Outcome{
			"infura": hung, "etherscan": hung, "status-cluster": ok, "prices": ok, "community": ok, "example": ok}, 4},
		// Infura's first byte comes 10 s late; the probe gives up after 2 s.
		{"preset-provider-slow", catalogue, []string{"preset-provider-slow"}, map[string]testbed.Outcome{
			"infura": hung, "etherscan": ok, "status-cluster": ok, "prices": ok, "community": ok, "example": ok}, 5},
		// The built-in cud-2019 as it ships: Infura and Etherscan fail
		// fast; the Status cluster it names is the real fleet, not on this
		// fake internet, so the node here stays reachable.
		{"built-in cud-2019 unmapped", "", nil, map[string]testbed.Outcome{
			"infura": fast, "etherscan": fast, "status-cluster": ok, "prices": ok, "community": ok, "example": ok}, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var args []string
			if tc.rules != "" {
				args = append(args, "--rules", tc.rules)
			}
			for _, s := range tc.scenarios {
				args = append(args, "--scenario", s)
			}
			w.topo.StartRouter(t, args...)
			c := w.capture(t)
			got := w.probe(net.JoinHostPort(testbed.RouterLAN4, "53"))
			for _, s := range w.targets {
				d := strings.Join(strings.Fields(got[s.Service].Detail), " ")
				t.Logf("%-14s %-11s %.120s", s.Service, got[s.Service].Outcome, d)
				if want := tc.want[s.Service]; got[s.Service].Outcome != want {
					t.Errorf("%s: %s %s (%s), want %s", tc.name, s.Service, got[s.Service].Outcome, got[s.Service].Detail, want)
				}
			}
			r := w.report(t, c, tc.rules, tc.scenarios...)
			if r.LeakCount() != 0 {
				t.Errorf("%s: %d leaks on the internet side:%s", tc.name, r.LeakCount(), leakList(r))
			}
			connected := 0
			for _, d := range r.Devices {
				for _, g := range d.Services {
					connected += g.Connected
				}
			}
			if connected < tc.minConnected {
				t.Errorf("%s: the internet-side capture shows %d connections, want at least %d (the services that worked)", tc.name, connected, tc.minConnected)
			}
		})
	}
}
