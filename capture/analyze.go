package capture

import (
	"errors"
	"io"
	"net/netip"
	"time"

	"github.com/google/gopacket/layers"

	"github.com/chaos-unicorn/unicorn/rules"
)

// Side says where a capture was taken, which decides what counts as a leak.
type Side uint8

// The sides of unicorn a capture can be taken on.
const (
	// SideInet: between unicorn and the internet. Any packet from a device
	// to a blocked address or port, and any completed handshake with a
	// blocked name (known from DNS answers, SNI or Host), got past unicorn.
	// DNS questions for blocked names are not leaks here: unicorn asks
	// them itself to learn the names' addresses.
	SideInet Side = iota
	// SideDevice: between the devices and unicorn. Blocked flows are
	// expected here; a leak is one that was answered anyway (a handshake
	// completed, a UDP reply, a DNS answer with real addresses).
	SideDevice
)

func (s Side) String() string {
	if s == SideDevice {
		return "device"
	}
	return "inet"
}

// Options configure an Analyzer. The zero value reports without verdicts.
type Options struct {
	// Engine decides what the scenario does to each flow (with Peek: no
	// counters, no events), at the time of the flow's first packet: Report
	// sets the engine's clock to the capture's time and switches its
	// active scenarios on again at Since, so that phases count from there.
	// OPTIONAL: nil reports attempts without blocked/leak verdicts.
	Engine *rules.Engine
	// Since is when the scenarios were switched on, for rules with phases.
	// OPTIONAL: zero means the first packet of the capture.
	Since time.Time
	// Services attributes destinations to catalogue services. OPTIONAL:
	// nil indexes the services of Engine's rule set.
	Services *ServiceIndex
	// Resolvers are the DNS servers devices are expected to use; DNS to any
	// other address is reported as a hard-coded resolver. OPTIONAL: empty
	// takes each device's most used resolver as the expected one.
	Resolvers []netip.Addr
	// Side is where the capture was taken (default SideInet).
	Side Side
	// MaxFlows bounds the flows and DNS questions kept (memory); beyond it
	// packets of new flows are counted as untracked. 0 means 1<<20.
	MaxFlows int
	// UDPIdle is the silence after which a device's next UDP packet on
	// the same flow counts as a new attempt. 0 means 30s.
	UDPIdle time.Duration
}

// Stats counts what the reader saw.
type Stats struct {
	Packets   int64     `json:"packets"`
	Bytes     int64     `json:"bytes"`
	NotIP     int64     `json:"not_ip"`
	Malformed int64     `json:"malformed"`
	Truncated int64     `json:"truncated"` // frames cut short by the snap length
	Untracked int64     `json:"untracked"` // packets of flows past MaxFlows
	First     time.Time `json:"first"`
	Last      time.Time `json:"last"`
	// FileError is why reading stopped early ("" at a clean end of file):
	// a capture cut off in the middle of a packet, for one.
	FileError string `json:"file_error,omitempty"`
}

// flowKey is one direction of a transport flow.
type flowKey struct {
	src, dst     netip.Addr
	sport, dport uint16
	proto        Proto
}

func (k flowKey) reverse() flowKey {
	return flowKey{src: k.dst, dst: k.src, sport: k.dport, dport: k.sport, proto: k.proto}
}

const maxTimes = 64 // attempt times kept per flow

// flow is one TCP connection or UDP flow, client (device) to server.
type flow struct {
	key      flowKey // client to server
	first    time.Time
	last     time.Time
	starts   []time.Time // SYNs sent (TCP) or starts after idle (UDP)
	nStarts  int
	isn      uint32
	synAck   bool
	rst      bool
	fin      bool
	mid      bool // first seen mid-stream: no attempt
	pktsOut  int64
	pktsIn   int64
	bytesOut int64
	bytesIn  int64
	dataOut  int // payload-bearing packets from the client looked at for a name
	name     string
	nameFrom string // "sni", "http", "dns"
	vlan     uint16
}

// query is one DNS question a device sent.
type query struct {
	client, server netip.Addr
	id             uint16
	name           string
	qtype          layers.DNSType
	time           time.Time
	answered       bool
	rcode          layers.DNSResponseCode
	addrs          []netip.Addr
	rtt            time.Duration
}

type queryKey struct {
	client, server netip.Addr
	id             uint16
}

// Analyzer accumulates packets and builds a Report. It is not safe for
// concurrent use.
type Analyzer struct {
	opt     Options
	flows   map[flowKey]*flow
	order   []*flow
	open    map[queryKey]*query
	queries []*query
	names   map[netip.Addr]string // address -> the name a device asked for
	stats   Stats
}

// NewAnalyzer returns an Analyzer with opt.
func NewAnalyzer(opt Options) (*Analyzer, error) {
	if opt.MaxFlows <= 0 {
		opt.MaxFlows = 1 << 20
	}
	if opt.UDPIdle <= 0 {
		opt.UDPIdle = 30 * time.Second
	}
	if opt.Services == nil && opt.Engine != nil {
		x, err := NewServiceIndex(opt.Engine.Set())
		if err != nil {
			return nil, err
		}
		opt.Services = x
	}
	return &Analyzer{
		opt:   opt,
		flows: make(map[flowKey]*flow),
		open:  make(map[queryKey]*query),
		names: make(map[netip.Addr]string),
	}, nil
}

// ReadFrom reads every frame of src into the Analyzer. It stops at the end
// of the source; a capture cut off mid-packet is recorded in Stats, not
// returned as an error. Other read errors are returned.
func (a *Analyzer) ReadFrom(src Source) error {
	dec, err := NewDecoder(src.LinkType())
	if err != nil {
		return err
	}
	for {
		data, ci, err := src.ZeroCopyReadPacketData()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			a.stats.FileError = err.Error()
			if errors.Is(err, io.ErrUnexpectedEOF) {
				return nil
			}
			// pcapgo reports a corrupt record header as a plain error; what
			// was read before it still makes a report.
			return nil
		}
		p, err := dec.Decode(data, ci)
		a.Add(p, err)
	}
}

// Add accounts one decoded packet; err is what Decoder.Decode returned.
func (a *Analyzer) Add(p *Packet, err error) {
	st := &a.stats
	st.Packets++
	st.Bytes += int64(p.Length)
	if st.First.IsZero() || p.Time.Before(st.First) {
		st.First = p.Time
	}
	if p.Time.After(st.Last) {
		st.Last = p.Time
	}
	if p.CapLen < p.Length {
		st.Truncated++
	}
	if err != nil {
		if errors.Is(err, ErrNotIP) {
			st.NotIP++
			return
		}
		st.Malformed++
		// What decoded before the bad layer still counts.
	}
	if p.Proto == ProtoAny || !p.Src.IsValid() {
		return
	}
	if p.DNS != nil {
		a.addDNS(p)
	}
	a.addFlow(p)
}

// wellKnown reports whether port is a server port, to orient flows first
// seen mid-stream or by their reply.
func wellKnown(port uint16) bool { return port < 1024 || port == 30303 || port == 8545 || port == 8546 }

func (a *Analyzer) addFlow(p *Packet) {
	k := flowKey{src: p.Src, dst: p.Dst, sport: p.SrcPort, dport: p.DstPort, proto: p.Proto}
	out := true
	f := a.flows[k]
	if f == nil {
		if f = a.flows[k.reverse()]; f != nil {
			out = false
		}
	}
	syn := p.Proto == ProtoTCP && p.Flags&(FlagSYN|FlagACK) == FlagSYN
	if f != nil && out && syn && f.isn != p.Seq && (f.rst || f.fin || f.synAck || f.mid) {
		f = nil // the port was reused for a new connection
	}
	if f == nil {
		if len(a.order) >= a.opt.MaxFlows {
			a.stats.Untracked++
			return
		}
		f = &flow{key: k, first: p.Time, vlan: p.VLAN}
		switch {
		case syn:
			f.isn = p.Seq
		case p.Proto == ProtoTCP && p.Flags&(FlagSYN|FlagACK) == FlagSYN|FlagACK:
			f.key, out, f.mid = k.reverse(), false, true // we missed the SYN
		case p.Proto == ProtoTCP:
			f.mid = true
			if wellKnown(p.SrcPort) && !wellKnown(p.DstPort) {
				f.key, out = k.reverse(), false
			}
		default: // UDP: the sender of the first packet, unless it is a reply
			if wellKnown(p.SrcPort) && !wellKnown(p.DstPort) {
				f.key, out, f.mid = k.reverse(), false, true
			}
		}
		a.flows[f.key] = f
		a.order = append(a.order, f)
	}
	if out {
		if p.Proto == ProtoTCP && syn {
			f.addStart(p.Time)
		} else if p.Proto == ProtoUDP && (f.nStarts == 0 && !f.mid || p.Time.Sub(f.last) >= a.opt.UDPIdle) {
			f.addStart(p.Time)
		}
		f.pktsOut++
		f.bytesOut += int64(p.Length)
		if len(p.Payload) > 0 && f.dataOut < 3 && f.nameFrom != "sni" && f.nameFrom != "http" {
			f.dataOut++
			if n := serverName(p.Payload); n != "" {
				f.name, f.nameFrom = n, "sni"
			} else if n := httpHost(p.Payload); n != "" {
				f.name, f.nameFrom = n, "http"
			}
		}
	} else {
		f.pktsIn++
		f.bytesIn += int64(p.Length)
		if p.Proto == ProtoTCP {
			if p.Flags&(FlagSYN|FlagACK) == FlagSYN|FlagACK {
				f.synAck = true
			}
			if p.Flags&FlagRST != 0 {
				f.rst = true
			}
		}
	}
	if p.Flags&FlagFIN != 0 {
		f.fin = true
	}
	if f.name == "" {
		if n, ok := a.names[f.key.dst]; ok {
			f.name, f.nameFrom = n, "dns"
		}
	}
	f.last = p.Time
}

func (f *flow) addStart(t time.Time) {
	f.nStarts++
	if len(f.starts) < maxTimes {
		f.starts = append(f.starts, t)
	}
}

func (a *Analyzer) addDNS(p *Packet) {
	m := p.DNS
	if len(m.Questions) == 0 {
		return
	}
	qname := cleanName(m.Questions[0].Name)
	if !m.QR {
		if len(a.queries) >= a.opt.MaxFlows {
			return
		}
		q := &query{client: p.Src, server: p.Dst, id: m.ID, name: qname, qtype: m.Questions[0].Type, time: p.Time}
		a.open[queryKey{p.Src, p.Dst, m.ID}] = q
		a.queries = append(a.queries, q)
		return
	}
	var addrs []netip.Addr
	for i := range m.Answers {
		rr := &m.Answers[i]
		var ad netip.Addr
		switch rr.Type {
		case layers.DNSTypeA:
			if v4 := rr.IP.To4(); v4 != nil {
				ad = netip.AddrFrom4([4]byte(v4))
			}
		case layers.DNSTypeAAAA:
			if len(rr.IP) == 16 {
				ad = netip.AddrFrom16([16]byte(rr.IP)).Unmap()
			}
		}
		if ad.IsValid() {
			addrs = append(addrs, ad)
			if qname != "" && !ad.IsUnspecified() {
				a.names[ad] = qname
			}
		}
	}
	k := queryKey{p.Dst, p.Src, m.ID}
	if q := a.open[k]; q != nil && q.name == qname {
		delete(a.open, k)
		q.answered, q.rcode, q.addrs, q.rtt = true, m.ResponseCode, addrs, p.Time.Sub(q.time)
	}
}

// Stats returns what the reader saw so far.
func (a *Analyzer) Stats() Stats { return a.stats }
