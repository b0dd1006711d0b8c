package capture

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"time"

	"github.com/google/gopacket/layers"

	"github.com/chaos-unicorn/unicorn/rules"
)

// maxTimeline bounds the attempts kept per device and service for plots.
const maxTimeline = 5000

// Report is what a capture says about each device and service. Every count
// is exact; only the timeline and the lists of leaks and endpoints are
// bounded.
type Report struct {
	// File is the capture's path, when read from a file.
	File string `json:"file,omitempty"`
	// Scenarios are the active scenarios verdicts were decided with.
	Scenarios []string `json:"scenarios"`
	// Side is where the capture was taken: "inet" or "device".
	Side  string `json:"side"`
	Stats Stats  `json:"stats"`
	// Devices are the addresses that started flows or asked DNS questions.
	Devices []*Device `json:"devices"`
	// Leaks are flows and questions that got past a blocking rule.
	Leaks       []Leak `json:"leaks"`
	LeakPackets int64  `json:"leak_packets"`
}

// Device is one device's activity.
type Device struct {
	Addr     netip.Addr       `json:"addr"`
	Services []*ServiceReport `json:"services"`
	// Resolvers are the DNS servers the device asked.
	Resolvers []Resolver `json:"resolvers"`
	// DoT, DoH and QUIC are encrypted-DNS and QUIC endpoints it used.
	DoT         []Endpoint `json:"dot,omitempty"`
	DoH         []Endpoint `json:"doh,omitempty"`
	QUIC        []Endpoint `json:"quic,omitempty"`
	Leaks       int        `json:"leaks"`
	LeakPackets int64      `json:"leak_packets"`
}

// ServiceReport is what one device tried against one service (or, outside
// the catalogue, one name or address).
type ServiceReport struct {
	// Service is the catalogue service; "" when the target is in none.
	Service string `json:"service,omitempty"`
	// Target is the service name, or the name or address contacted.
	Target string `json:"target"`
	// Verdict is what the scenario does to the target's flows ("allow",
	// "reject", ...; the most blocking one when they differ), and Rule the
	// rule that decided it.
	Verdict string `json:"verdict"`
	Rule    string `json:"rule,omitempty"`
	// Attempts counts TCP SYNs (retransmissions too), UDP flows (and
	// restarts after silence) and DNS questions.
	Attempts int `json:"attempts"`
	TCP      int `json:"tcp"`
	UDP      int `json:"udp"`
	DNS      int `json:"dns"`
	// Retries are attempts that repeat an earlier one to the same
	// destination (address, port and protocol; or the same DNS name).
	Retries int `json:"retries"`
	// Backoff are the intervals between consecutive attempts to the same
	// destination, in time order (the first 64).
	Backoff []Duration `json:"backoff"`
	// Connected counts TCP handshakes completed and UDP flows answered;
	// Refused TCP attempts answered with RST; Unanswered the rest.
	Connected  int `json:"connected"`
	Refused    int `json:"refused"`
	Unanswered int `json:"unanswered"`
	// Names are the DNS names asked for, with their answers.
	Names []Name `json:"names,omitempty"`
	// Destinations are the address:port/proto endpoints and DNS names tried,
	// in order of first attempt.
	Destinations []*Destination `json:"destinations"`
	// Fallbacks are destinations first tried after an earlier one failed.
	Fallbacks   []string `json:"fallbacks,omitempty"`
	Leaks       int      `json:"leaks"`
	LeakPackets int64    `json:"leak_packets"`
	// Timeline holds the attempts in time order (the first 5000).
	Timeline []Attempt `json:"timeline,omitempty"`

	blocking bool
	dests    map[string]*Destination
}

// Destination is one endpoint a device tried.
type Destination struct {
	Dest     string     `json:"dest"`
	Name     string     `json:"name,omitempty"`
	Attempts int        `json:"attempts"`
	OK       bool       `json:"ok"`
	First    float64    `json:"first"` // seconds since the capture began
	times    []Duration // offsets of attempts, for back-off
	firstOK  bool
}

// Attempt is one attempt on a timeline.
type Attempt struct {
	// T is seconds since the first packet of the capture.
	T       float64 `json:"t"`
	Kind    string  `json:"kind"` // tcp, udp, dns
	Dest    string  `json:"dest"`
	Outcome string  `json:"outcome"` // connected, refused, no answer, answered, NXDOMAIN, ...
}

// Name is a DNS name a device asked for.
type Name struct {
	Name    string   `json:"name"`
	Queries int      `json:"queries"`
	RCode   string   `json:"rcode"` // of the last answer; "no answer" if none
	Addrs   []string `json:"addrs,omitempty"`
}

// Resolver is a DNS server a device asked.
type Resolver struct {
	Addr     netip.Addr `json:"addr"`
	Queries  int        `json:"queries"`
	Expected bool       `json:"expected"`
}

// Endpoint is a DoT, DoH or QUIC endpoint a device used.
type Endpoint struct {
	Dest  string `json:"dest"`
	Name  string `json:"name,omitempty"`
	Flows int    `json:"flows"`
}

// Leak is a flow or DNS question that got past a blocking rule.
type Leak struct {
	T       float64    `json:"t"`
	Device  netip.Addr `json:"device"`
	Target  string     `json:"target"`
	Dest    string     `json:"dest"`
	Name    string     `json:"name,omitempty"`
	Reason  string     `json:"reason"`
	Rule    string     `json:"rule"`
	Packets int64      `json:"packets"`
}

// Duration marshals as milliseconds.
type Duration time.Duration

// MarshalJSON writes d as milliseconds.
func (d Duration) MarshalJSON() ([]byte, error) {
	return []byte(fmt.Sprintf("%.3f", float64(d)/float64(time.Millisecond))), nil
}

// UnmarshalJSON reads milliseconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var ms float64
	if err := json.Unmarshal(b, &ms); err != nil {
		return err
	}
	*d = Duration(ms * float64(time.Millisecond))
	return nil
}

func (d Duration) String() string {
	t := time.Duration(d)
	switch {
	case t >= time.Second:
		return t.Round(10 * time.Millisecond).String()
	case t >= time.Millisecond:
		return t.Round(100 * time.Microsecond).String()
	}
	return t.String()
}

const maxLeaks = 1000

// dohSuffixes are names of well-known public DNS-over-HTTPS services.
var dohSuffixes = []string{
	"dns.google", "dns.google.com", "cloudflare-dns.com", "dns.quad9.net",
	"doh.opendns.com", "dns.adguard.com", "dns.adguard-dns.com",
	"doh.cleanbrowsing.org", "dns.nextdns.io", "doh.dns.sb", "dns.alidns.com",
	"doh.pub", "dns.controld.com", "doh.mullvad.net", "dns.mullvad.net",
}

func isDoH(name string) bool {
	for _, s := range dohSuffixes {
		if name == s || strings.HasSuffix(name, "."+s) {
			return true
		}
	}
	return false
}

// builder holds the state of one Report build.
type builder struct {
	a       *Analyzer
	r       *Report
	devs    map[netip.Addr]*Device
	groups  map[groupKey]*ServiceReport
	resolv  map[netip.Addr]map[netip.Addr]int
	start   time.Time
	clock   time.Time // the engine's time while deciding
	leakAll int
}

type groupKey struct {
	dev    netip.Addr
	target string
}

// Report builds the report of everything added so far.
func (a *Analyzer) Report() *Report {
	b := &builder{
		a:      a,
		r:      &Report{Side: a.opt.Side.String(), Stats: a.stats, Devices: []*Device{}, Leaks: []Leak{}},
		devs:   map[netip.Addr]*Device{},
		groups: map[groupKey]*ServiceReport{},
		resolv: map[netip.Addr]map[netip.Addr]int{},
		start:  a.stats.First,
	}
	if eng := a.opt.Engine; eng != nil {
		for _, sc := range eng.Active() {
			b.r.Scenarios = append(b.r.Scenarios, sc.Name)
		}
		// Decide at the capture's time; phases count from Since.
		b.clock = a.opt.Since
		if b.clock.IsZero() {
			b.clock = a.stats.First
		}
		eng.SetClock(func() time.Time { return b.clock })
		for _, st := range eng.Scenarios() {
			if st.On {
				if err := eng.Switch(st.Scenario.Name, true, st.Clients); err != nil {
					panic(err) // the name came from the engine itself
				}
			}
		}
	}
	for _, f := range a.order {
		b.addFlow(f)
	}
	for _, q := range a.queries {
		b.addQuery(q)
	}
	b.finish()
	return b.r
}

func (b *builder) device(addr netip.Addr) *Device {
	d := b.devs[addr]
	if d == nil {
		d = &Device{Addr: addr, Services: []*ServiceReport{}, Resolvers: []Resolver{}}
		b.devs[addr] = d
		b.r.Devices = append(b.r.Devices, d)
	}
	return d
}

func (b *builder) group(dev netip.Addr, service, target string) *ServiceReport {
	k := groupKey{dev, target}
	g := b.groups[k]
	if g == nil {
		g = &ServiceReport{Service: service, Target: target, Verdict: "allow", Destinations: []*Destination{}, dests: map[string]*Destination{}}
		b.groups[k] = g
		d := b.device(dev)
		d.Services = append(d.Services, g)
	}
	return g
}

func (b *builder) offset(t time.Time) float64 { return t.Sub(b.start).Seconds() }

// verdict records what the scenario does to a flow of g.
func (g *ServiceReport) verdict(d rules.Decision) {
	if d.Rule == nil {
		return
	}
	if g.blocking && !d.Action.Blocking() {
		return
	}
	if !g.blocking || g.Rule == "" {
		g.Verdict, g.Rule = d.Action.String(), d.Rule.Ref()
		g.blocking = d.Action.Blocking()
	}
}

func (b *builder) dest(g *ServiceReport, key, name string, t time.Time) *Destination {
	ds := g.dests[key]
	if ds == nil {
		ds = &Destination{Dest: key, Name: name, First: b.offset(t)}
		g.dests[key] = ds
		g.Destinations = append(g.Destinations, ds)
	}
	return ds
}

func (b *builder) attempt(g *ServiceReport, ds *Destination, kind string, t time.Time, outcome string, ok bool) {
	g.Attempts++
	if ds.Attempts == 0 {
		ds.firstOK = ok
	}
	ds.Attempts++
	ds.OK = ds.OK || ok
	if len(ds.times) < maxTimes {
		ds.times = append(ds.times, Duration(t.Sub(b.start)))
	}
	if len(g.Timeline) < maxTimeline {
		g.Timeline = append(g.Timeline, Attempt{T: b.offset(t), Kind: kind, Dest: ds.Dest, Outcome: outcome})
	}
}

func (b *builder) peek(f rules.Flow) rules.Decision {
	if b.a.opt.Engine == nil {
		return rules.Decision{}
	}
	return b.a.opt.Engine.Peek(f)
}

func rulesProto(p Proto) rules.Proto {
	switch p {
	case ProtoTCP:
		return rules.ProtoTCP
	case ProtoUDP:
		return rules.ProtoUDP
	}
	return rules.ProtoAny
}

func (b *builder) addFlow(f *flow) {
	k := f.key
	layer := rules.LayerTCP
	if k.proto == ProtoUDP {
		layer = rules.LayerUDP
	}
	dest := netip.AddrPortFrom(k.dst, k.dport).String() + "/" + k.proto.String()
	fl := rules.Flow{Client: k.src, Layer: layer, Host: f.name, Addr: k.dst, Port: k.dport, Proto: rulesProto(k.proto)}
	service := b.a.opt.Services.Service(fl)
	b.clock = f.first
	dec := b.peek(fl)
	target := service
	if target == "" {
		target = f.name
		if target == "" {
			target = k.dst.String()
		}
	}
	isDNS := k.dport == 53
	// A flow seen only by a reply (mid-stream, nothing from the client)
	// says nothing about what the device tried.
	if !isDNS && (f.nStarts > 0 || f.pktsOut > 0) {
		g := b.group(k.src, service, target)
		g.verdict(dec)
		ds := b.dest(g, dest, f.name, f.first)
		for i, t := range f.starts {
			outcome, ok := "no answer", false
			last := i == len(f.starts)-1
			switch {
			case k.proto == ProtoUDP && f.pktsIn > 0:
				outcome, ok = "answered", true
			case k.proto == ProtoTCP && last && f.synAck:
				outcome, ok = "connected", true
			case k.proto == ProtoTCP && last && f.rst:
				outcome = "refused"
			}
			if k.proto == ProtoTCP {
				g.TCP++
			} else {
				g.UDP++
			}
			b.attempt(g, ds, k.proto.String(), t, outcome, ok)
			if last || k.proto == ProtoUDP {
				switch outcome {
				case "connected", "answered":
					g.Connected++
				case "refused":
					g.Refused++
				default:
					g.Unanswered++
				}
			} else {
				g.Unanswered++
			}
		}
		dev := b.device(k.src)
		switch {
		case k.dport == 853:
			dev.DoT = addEndpoint(dev.DoT, dest, f.name)
		case k.dport == 443 && isDoH(f.name):
			dev.DoH = addEndpoint(dev.DoH, dest, f.name)
		}
		if k.proto == ProtoUDP && k.dport == 443 {
			dev.QUIC = addEndpoint(dev.QUIC, dest, f.name)
		}
	}
	b.flowLeak(f, fl, dest, target)
}

// flowLeak decides whether f got past a blocking rule.
func (b *builder) flowLeak(f *flow, fl rules.Flow, dest, target string) {
	if b.a.opt.Engine == nil || f.pktsOut == 0 {
		return
	}
	answered := f.synAck || (f.key.proto == ProtoUDP && f.pktsIn > 0)
	byAddr := fl
	byAddr.Host = ""
	var reason string
	var dec rules.Decision
	if d := b.peek(byAddr); d.Action.Blocking() {
		dec = d
		switch {
		case b.a.opt.Side == SideInet:
			reason = "packets to a blocked address reached the internet side"
		case answered:
			reason = "a blocked address answered"
		}
	} else if fl.Host != "" {
		if d := b.peek(fl); d.Action.Blocking() && answered {
			dec = d
			reason = "handshake completed with a blocked name"
			if f.key.proto == ProtoUDP {
				reason = "a blocked name answered"
			}
		}
	}
	if reason == "" {
		return
	}
	b.leak(Leak{
		T: b.offset(f.first), Device: f.key.src, Target: target, Dest: dest, Name: f.name,
		Reason: reason, Rule: dec.Rule.Ref(), Packets: f.pktsOut,
	})
}

func (b *builder) leak(l Leak) {
	b.leakAll++
	b.r.LeakPackets += l.Packets
	if len(b.r.Leaks) < maxLeaks {
		b.r.Leaks = append(b.r.Leaks, l)
	}
	d := b.device(l.Device)
	d.Leaks++
	d.LeakPackets += l.Packets
	for _, g := range d.Services {
		if g.Target == l.Target {
			g.Leaks++
			g.LeakPackets += l.Packets
			return
		}
	}
	g := b.group(l.Device, "", l.Target)
	g.Leaks++
	g.LeakPackets += l.Packets
}

func addEndpoint(list []Endpoint, dest, name string) []Endpoint {
	for i := range list {
		if list[i].Dest == dest {
			list[i].Flows++
			if list[i].Name == "" {
				list[i].Name = name
			}
			return list
		}
	}
	if len(list) >= 100 {
		return list
	}
	return append(list, Endpoint{Dest: dest, Name: name, Flows: 1})
}

func rcodeString(q *query) string {
	if !q.answered {
		return "no answer"
	}
	if q.rcode == layers.DNSResponseCodeNoErr {
		if len(q.addrs) == 0 {
			return "NODATA"
		}
		return "NOERROR"
	}
	if int(q.rcode) < len(rcodeNames) {
		return rcodeNames[q.rcode]
	}
	return fmt.Sprintf("RCODE%d", q.rcode)
}

var rcodeNames = []string{"NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED"}

func (b *builder) addQuery(q *query) {
	rs := b.resolv[q.client]
	if rs == nil {
		rs = map[netip.Addr]int{}
		b.resolv[q.client] = rs
	}
	rs[q.server]++
	fl := rules.Flow{Client: q.client, Layer: rules.LayerDNS, Host: q.name}
	service := b.a.opt.Services.Service(fl)
	target := service
	if target == "" {
		target = q.name
	}
	b.clock = q.time
	dec := b.peek(fl)
	g := b.group(q.client, service, target)
	g.verdict(dec)
	g.DNS++
	ds := b.dest(g, q.name, q.name, q.time)
	rc := rcodeString(q)
	ok := q.answered && q.rcode == layers.DNSResponseCodeNoErr && len(q.addrs) > 0
	b.attempt(g, ds, "dns", q.time, rc, ok)
	g.addName(q, rc)
	// On the internet side, questions for blocked names are expected:
	// unicorn looks them up itself to learn their addresses, and behind
	// its NAT they look like the devices'. What would leak is the
	// connection after them, judged by flowLeak.
	if b.a.opt.Side == SideInet || !dec.Action.Blocking() || !dec.Action.AppliesTo(rules.LayerDNS) {
		return
	}
	for _, a := range q.addrs {
		if !a.IsUnspecified() {
			b.leak(Leak{
				T: b.offset(q.time), Device: q.client, Target: target, Dest: netip.AddrPortFrom(q.server, 53).String() + "/dns",
				Name: q.name, Reason: "blocked name resolved to real addresses", Rule: dec.Rule.Ref(), Packets: 1,
			})
			return
		}
	}
}

func (g *ServiceReport) addName(q *query, rc string) {
	for i := range g.Names {
		n := &g.Names[i]
		if n.Name == q.name {
			n.Queries++
			if q.answered {
				n.RCode = rc
				n.Addrs = addrStrings(q.addrs)
			}
			return
		}
	}
	if len(g.Names) < 100 {
		g.Names = append(g.Names, Name{Name: q.name, Queries: 1, RCode: rc, Addrs: addrStrings(q.addrs)})
	}
}

func addrStrings(as []netip.Addr) []string {
	var out []string
	for _, a := range as {
		out = append(out, a.String())
	}
	return out
}

func (b *builder) finish() {
	for _, d := range b.r.Devices {
		for _, g := range d.Services {
			b.finishGroup(g)
		}
		sort.SliceStable(d.Services, func(i, j int) bool {
			a, c := d.Services[i], d.Services[j]
			if (a.Service != "") != (c.Service != "") {
				return a.Service != ""
			}
			if a.Attempts != c.Attempts {
				return a.Attempts > c.Attempts
			}
			return a.Target < c.Target
		})
		rs := b.resolv[d.Addr]
		best, bestN := netip.Addr{}, -1
		for addr, n := range rs {
			if n > bestN || n == bestN && addr.Less(best) {
				best, bestN = addr, n
			}
		}
		for addr, n := range rs {
			exp := addr == best
			if len(b.a.opt.Resolvers) > 0 {
				exp = false
				for _, e := range b.a.opt.Resolvers {
					if e == addr {
						exp = true
					}
				}
			}
			d.Resolvers = append(d.Resolvers, Resolver{Addr: addr, Queries: n, Expected: exp})
		}
		sort.Slice(d.Resolvers, func(i, j int) bool {
			if d.Resolvers[i].Queries != d.Resolvers[j].Queries {
				return d.Resolvers[i].Queries > d.Resolvers[j].Queries
			}
			return d.Resolvers[i].Addr.Less(d.Resolvers[j].Addr)
		})
	}
	sort.SliceStable(b.r.Devices, func(i, j int) bool { return b.r.Devices[i].Addr.Less(b.r.Devices[j].Addr) })
	sort.SliceStable(b.r.Leaks, func(i, j int) bool { return b.r.Leaks[i].T < b.r.Leaks[j].T })
}

func (b *builder) finishGroup(g *ServiceReport) {
	sort.SliceStable(g.Timeline, func(i, j int) bool { return g.Timeline[i].T < g.Timeline[j].T })
	sort.SliceStable(g.Destinations, func(i, j int) bool { return g.Destinations[i].First < g.Destinations[j].First })
	var firstFail float64 = -1
	for _, ds := range g.Destinations {
		sort.Slice(ds.times, func(i, j int) bool { return ds.times[i] < ds.times[j] })
		if ds.Attempts > 1 {
			g.Retries += ds.Attempts - 1
		}
		for i := 1; i < len(ds.times) && len(g.Backoff) < maxTimes; i++ {
			g.Backoff = append(g.Backoff, ds.times[i]-ds.times[i-1])
		}
		if firstFail >= 0 && ds.First > firstFail {
			g.Fallbacks = append(g.Fallbacks, ds.Dest)
		}
		if !ds.firstOK && firstFail < 0 {
			firstFail = ds.First
		}
	}
}
