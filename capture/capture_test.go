package capture_test

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chaos-unicorn/unicorn/capture"
	"github.com/chaos-unicorn/unicorn/capture/capturetest"
	"github.com/chaos-unicorn/unicorn/rules"
)

func engine(t testing.TB) *rules.Engine {
	t.Helper()
	set, err := rules.Load("testdata/scenario.yaml")
	if err != nil {
		t.Fatal(err)
	}
	eng, err := rules.NewEngine(set, set.Defaults())
	if err != nil {
		t.Fatal(err)
	}
	return eng
}

func report(t testing.TB, file string, opt capture.Options) *capture.Report {
	t.Helper()
	f, err := capture.Open(filepath.Join("testdata", file))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	a, err := capture.NewAnalyzer(opt)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.ReadFrom(f); err != nil {
		t.Fatal(err)
	}
	return a.Report()
}

func device(t *testing.T, r *capture.Report, addr netip.Addr) *capture.Device {
	t.Helper()
	for _, d := range r.Devices {
		if d.Addr == addr {
			return d
		}
	}
	t.Fatalf("no device %s in the report (devices: %v)", addr, r.Devices)
	return nil
}

func service(t *testing.T, d *capture.Device, target string) *capture.ServiceReport {
	t.Helper()
	for _, g := range d.Services {
		if g.Target == target {
			return g
		}
	}
	t.Fatalf("device %s: no target %q", d.Addr, target)
	return nil
}

func ms(n int) capture.Duration { return capture.Duration(time.Duration(n) * time.Millisecond) }

func TestRehearsalDeviceSide(t *testing.T) {
	r := report(t, "rehearsal.pcap", capture.Options{Engine: engine(t), Side: capture.SideDevice})
	if r.Stats.Packets != 40 || r.Stats.Malformed != 0 || r.Stats.FileError != "" {
		t.Errorf("stats = %+v, want 40 packets, none malformed", r.Stats)
	}
	if !slices.Equal(r.Scenarios, []string{"rehearsal"}) || r.Side != "device" {
		t.Errorf("scenarios %v side %q", r.Scenarios, r.Side)
	}
	phone := device(t, r, capturetest.Phone)

	infura := service(t, phone, "infura")
	if infura.Service != "infura" || infura.Verdict != "reject" || !strings.Contains(infura.Rule, "scenario.yaml:13") {
		t.Errorf("infura verdict %q rule %q", infura.Verdict, infura.Rule)
	}
	if infura.Attempts != 3 || infura.DNS != 3 || infura.Retries != 2 {
		t.Errorf("infura attempts %d dns %d retries %d, want 3 3 2", infura.Attempts, infura.DNS, infura.Retries)
	}
	if !reflect.DeepEqual(infura.Backoff, []capture.Duration{ms(1000), ms(2000)}) {
		t.Errorf("infura back-off %v, want [1s 2s]", infura.Backoff)
	}
	if len(infura.Names) != 1 || infura.Names[0].Name != "mainnet.infura.io" || infura.Names[0].RCode != "NXDOMAIN" || infura.Names[0].Queries != 3 {
		t.Errorf("infura names %+v", infura.Names)
	}

	cluster := service(t, phone, "status-cluster")
	if cluster.TCP != 2 || cluster.UDP != 1 || cluster.Refused != 2 || cluster.Unanswered != 1 || cluster.Connected != 0 {
		t.Errorf("status-cluster tcp %d udp %d refused %d unanswered %d connected %d", cluster.TCP, cluster.UDP, cluster.Refused, cluster.Unanswered, cluster.Connected)
	}
	if len(cluster.Fallbacks) == 0 || cluster.Fallbacks[0] != "198.51.100.11:30303/tcp" {
		t.Errorf("status-cluster fallbacks %v, want 198.51.100.11:30303/tcp first", cluster.Fallbacks)
	}
	community := service(t, phone, "203.0.113.50")
	if community.Connected != 1 || community.Verdict != "allow" {
		t.Errorf("community node: connected %d verdict %s", community.Connected, community.Verdict)
	}
	prices := service(t, phone, "prices")
	if prices.Connected != 1 || prices.TCP != 1 || prices.DNS != 1 || prices.Destinations[1].Name != "min-api.cryptocompare.com" {
		t.Errorf("prices: %+v", prices)
	}

	// Device side: the blackholed questions are expected; what the
	// hard-coded resolver answered and the handshake after it are leaks.
	if r.LeakCount() != 2 || len(r.Leaks) != 2 || phone.Leaks != 2 {
		t.Fatalf("leaks = %d %+v, want 2", r.LeakCount(), r.Leaks)
	}
	if l := r.Leaks[0]; l.Dest != "198.51.100.53:53/dns" || l.Name != "api.etherscan.io" || l.Target != "etherscan" {
		t.Errorf("leak 0 = %+v", l)
	}
	if l := r.Leaks[1]; l.Dest != "203.0.113.40:443/tcp" || l.Name != "api.etherscan.io" || !strings.Contains(l.Reason, "handshake") {
		t.Errorf("leak 1 = %+v", l)
	}
	want := []capture.Resolver{{Addr: capturetest.Unicorn, Queries: 6, Expected: true}, {Addr: capturetest.Rogue, Queries: 1}}
	if !reflect.DeepEqual(phone.Resolvers, want) {
		t.Errorf("resolvers %+v, want %+v", phone.Resolvers, want)
	}

	laptop := device(t, r, capturetest.Laptop)
	if len(laptop.DoT) != 1 || laptop.DoT[0].Dest != "203.0.113.53:853/tcp" {
		t.Errorf("DoT %+v", laptop.DoT)
	}
	if len(laptop.QUIC) != 1 || laptop.QUIC[0].Name != "min-api.cryptocompare.com" {
		t.Errorf("QUIC %+v", laptop.QUIC)
	}
	if lp := service(t, laptop, "prices"); lp.TCP != 1 || lp.UDP != 1 || lp.Connected != 2 {
		t.Errorf("laptop prices %+v", lp)
	}
}

func TestRehearsalInetSide(t *testing.T) {
	// Seen from the internet side, every packet to a blocked address and
	// every handshake with a blocked name got past unicorn; questions for
	// blocked names may be unicorn's own.
	r := report(t, "rehearsal.pcap", capture.Options{Engine: engine(t), Resolvers: []netip.Addr{capturetest.Unicorn}})
	if r.LeakCount() != 4 {
		t.Fatalf("leaks = %d, want 4: 3 status-cluster flows, 1 etherscan handshake\n%+v", r.LeakCount(), r.Leaks)
	}
	phone := device(t, r, capturetest.Phone)
	if g := service(t, phone, "status-cluster"); g.Leaks != 3 || g.LeakPackets != 4 {
		t.Errorf("status-cluster leaks %d packets %d, want 3 flows, 4 packets", g.Leaks, g.LeakPackets)
	}
	if phone.Resolvers[1].Expected {
		t.Errorf("198.51.100.53 is not among --resolver but reported expected")
	}
}

func TestNoRulesNoVerdicts(t *testing.T) {
	r := report(t, "rehearsal.pcap", capture.Options{})
	if len(r.Leaks) != 0 || len(r.Scenarios) != 0 {
		t.Errorf("without rules: leaks %v scenarios %v", r.Leaks, r.Scenarios)
	}
	phone := device(t, r, capturetest.Phone)
	// Without a catalogue, targets are the names and addresses.
	g := service(t, phone, "mainnet.infura.io")
	if g.DNS != 3 || g.Verdict != "allow" {
		t.Errorf("mainnet.infura.io %+v", g)
	}
}

func TestVLAN(t *testing.T) {
	r := report(t, "vlan.pcap", capture.Options{Engine: engine(t), Side: capture.SideDevice})
	d := device(t, r, capturetest.VLANDevice)
	g := service(t, d, "infura")
	if g.TCP != 3 || g.Unanswered != 3 || g.Retries != 2 {
		t.Errorf("infura over VLAN: tcp %d unanswered %d retries %d, want 3 3 2", g.TCP, g.Unanswered, g.Retries)
	}
	if !reflect.DeepEqual(g.Backoff, []capture.Duration{ms(1000), ms(2000)}) {
		t.Errorf("back-off %v, want [1s 2s]", g.Backoff)
	}
	if g.Destinations[1].Name != "mainnet.infura.io" {
		t.Errorf("the address was not attributed to the name: %+v", g.Destinations)
	}
}

func TestIPv6Pcapng(t *testing.T) {
	r := report(t, "ipv6.pcapng", capture.Options{Engine: engine(t), Side: capture.SideDevice})
	d := device(t, r, capturetest.Phone6)
	infura := service(t, d, "infura")
	if infura.Connected != 1 || infura.Names[0].Addrs[0] != "2001:db8:2::20" {
		t.Errorf("infura over IPv6: %+v", infura)
	}
	cluster := service(t, d, "status-cluster")
	if cluster.TCP != 2 || cluster.Refused != 2 || !reflect.DeepEqual(cluster.Backoff, []capture.Duration{ms(500)}) {
		t.Errorf("cluster over IPv6: %+v", cluster)
	}
	// The rejected name resolved and its handshake completed: two leaks,
	// on either side.
	if r.LeakCount() != 2 || r.Leaks[0].Dest != "[2001:db8:1::1]:53/dns" || r.Leaks[1].Dest != "[2001:db8:2::20]:443/tcp" {
		t.Errorf("leaks %+v", r.Leaks)
	}
}

func TestMalformed(t *testing.T) {
	r := report(t, "malformed.pcap", capture.Options{Engine: engine(t)})
	st := r.Stats
	if st.Packets != 7 || st.Malformed != 4 || st.Truncated != 1 || st.NotIP != 1 {
		t.Errorf("stats %+v, want 7 packets: 4 malformed, 1 truncated, 1 not IP", st)
	}
	if !strings.Contains(st.FileError, "EOF") {
		t.Errorf("file error %q, want the early end of the file", st.FileError)
	}
	d := device(t, r, capturetest.Phone)
	if g := service(t, d, "203.0.113.30"); g.TCP != 2 {
		t.Errorf("the good and the truncated SYN: tcp %d, want 2", g.TCP)
	}
}

func TestNotACapture(t *testing.T) {
	dir := t.TempDir()
	for name, data := range map[string]string{"empty": "", "text": "hello, this is not a capture\n"} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := capture.Open(p); err == nil || !strings.Contains(err.Error(), "not a pcap") {
			t.Errorf("%s: err = %v, want 'not a pcap'", name, err)
		}
	}
}

// TestGeneratorMakesTestdata: the checked-in captures are what the
// generator makes (TLS hellos carry fresh randomness, so the reports are
// compared, not the bytes).
func TestGeneratorMakesTestdata(t *testing.T) {
	eng := engine(t)
	for name, gen := range capturetest.Files {
		var buf bytes.Buffer
		if err := gen(&buf); err != nil {
			t.Fatal(name, err)
		}
		src, err := capture.NewReader(&buf)
		if err != nil {
			t.Fatal(name, err)
		}
		a, _ := capture.NewAnalyzer(capture.Options{Engine: eng})
		if err := a.ReadFrom(src); err != nil {
			t.Fatal(name, err)
		}
		got, _ := json.Marshal(a.Report())
		want, _ := json.Marshal(report(t, name, capture.Options{Engine: eng}))
		if !bytes.Equal(got, want) {
			t.Errorf("%s: the generator's capture reports differently from testdata/%s; regenerate (see testdata/README.md)\ngot  %s\nwant %s", name, name, got, want)
		}
	}
}

// TestPhasesFollowTheCapture: a rule with phases decides each flow by the
// time of its first packet, counted from the start of the capture or from
// Since.
func TestPhasesFollowTheCapture(t *testing.T) {
	set, err := rules.Parse("phased.yaml", []byte(`scenario: phased
services:
  infura: {domains: [infura.io]}
rules:
  - service: infura
    phases:
      - {for: 5s, action: allow}
      - {action: reject}
`))
	if err != nil {
		t.Fatal(err)
	}
	eng, err := rules.NewEngine(set, []string{"phased"})
	if err != nil {
		t.Fatal(err)
	}
	// The questions at 0, 1 and 3 s fall in the first five seconds.
	r := report(t, "rehearsal.pcap", capture.Options{Engine: eng})
	if g := service(t, device(t, r, capturetest.Phone), "infura"); g.Verdict != "allow" {
		t.Errorf("verdict %q, want allow: the questions came in the first phase", g.Verdict)
	}
	// Switched on 4 s before the capture began, the second phase covers
	// the questions at 1 and 3 s.
	r = report(t, "rehearsal.pcap", capture.Options{Engine: eng, Since: capturetest.Start.Add(-4 * time.Second)})
	if g := service(t, device(t, r, capturetest.Phone), "infura"); g.Verdict != "reject" || !strings.Contains(g.Rule, "phased.yaml") {
		t.Errorf("verdict %q (%s), want reject", g.Verdict, g.Rule)
	}
}
