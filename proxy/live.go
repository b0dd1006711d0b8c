package proxy

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/chaos-unicorn/unicorn/rules"
)

// The live registry holds every open tunnel, and every connection unicorn
// answers itself for a long time (an intercepted CONNECT, a WebSocket),
// with the questions that were asked about it. When the rules change (a scenario switched on or off,
// new rules loaded), and every second besides (a rule's phase, window or
// schedule moves with the clock), each open tunnel is decided again,
// without side effects (Engine.Peek), and the decision now deciding it
// says what happens (rules.Decision.OnExisting):
//
//   - cut: the tunnel is closed at once (with a RST);
//   - degrade: its byte fault applies from now on (a live tunnel becomes
//     throttled, say); the splice is interrupted and resumes through the
//     fault wrapper;
//   - keep: it stays as it was.
//
// A tunnel whose fault was applied live, or at its start, is relieved of
// it again when the change leaves it to no rule, or to an allow rule,
// unless the old rule says keep. Connections unicorn terminates can be cut
// but not degraded: their requests are each decided anyway. A CONNECT or
// SOCKS request held by a blackhole is closed when a change leaves it to
// no blocking rule (unless its rule says keep), so the device retries.

// live is an open connection the registry re-decides.
type live interface {
	// Flows are the questions whose answers let the connection through.
	Flows() []rules.Flow
	// Decision is the decision it is carried under now.
	Decision() rules.Decision
	// Done reports whether it has ended.
	Done() bool
	// Cut closes it at once, with a RST to the device.
	Cut()
	// Degrade carries it under d from now on, applying d's byte fault,
	// or only records d where no fault can apply.
	Degrade(d rules.Decision)
	// Client is the device's address, for logs.
	Client() string
}

// peeker decides a flow without side effects; *rules.Engine is one.
type peeker interface {
	Peek(rules.Flow) rules.Decision
}

// changeNotifier tells of rule changes; *rules.Engine is one.
type changeNotifier interface {
	OnChange(fn func()) (remove func())
}

// liveSet is the registry of open connections.
type liveSet struct {
	mu    sync.Mutex
	conns map[live]struct{}
	kick  chan struct{} // one pending re-decision at most
}

func (l *liveSet) add(c live) {
	l.mu.Lock()
	if l.conns == nil {
		l.conns = make(map[live]struct{})
	}
	l.conns[c] = struct{}{}
	l.mu.Unlock()
}

func (l *liveSet) remove(c live) {
	l.mu.Lock()
	delete(l.conns, c)
	l.mu.Unlock()
}

// len returns the number of open connections in the registry.
func (l *liveSet) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.conns)
}

func (l *liveSet) snapshot() []live {
	l.mu.Lock()
	defer l.mu.Unlock()
	cs := make([]live, 0, len(l.conns))
	for c := range l.conns {
		cs = append(cs, c)
	}
	return cs
}

// terminated is a connection unicorn answers itself (an intercepted
// CONNECT, a WebSocket): the registry can cut it, and degrading it only
// records the decision.
type terminated struct {
	conn  net.Conn // the device's side
	flows []rules.Flow

	mu       sync.Mutex
	decision rules.Decision
	done     bool
}

// watch registers conn, let through under d after the questions flows,
// until the returned function is called (when the connection ends).
func (p *Proxy) watch(conn net.Conn, d rules.Decision, flows ...rules.Flow) (end func()) {
	c := &terminated{conn: conn, flows: flows, decision: d}
	p.live.add(c)
	return func() {
		c.mu.Lock()
		c.done = true
		c.mu.Unlock()
		p.live.remove(c)
	}
}

func (c *terminated) Flows() []rules.Flow { return c.flows }
func (c *terminated) Client() string      { return c.conn.RemoteAddr().String() }

func (c *terminated) Decision() rules.Decision {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.decision
}

func (c *terminated) Done() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.done
}

func (c *terminated) Cut() {
	resetOnClose(c.conn)
	c.conn.Close()
}

func (c *terminated) Degrade(d rules.Decision) {
	c.mu.Lock()
	c.decision = d
	c.mu.Unlock()
}

var _ live = (*terminated)(nil)

// hostFlow is the question about a connection from conn's device to
// host:port at the HTTP layer (by name, or by address for a literal).
func hostFlow(conn net.Conn, host string, port uint16) rules.Flow {
	f := rules.Flow{Layer: rules.LayerHTTP, Port: port, Proto: rules.ProtoTCP}
	if ap, err := netip.ParseAddrPort(conn.RemoteAddr().String()); err == nil {
		f.Client = ap.Addr().Unmap()
	}
	if a, err := netip.ParseAddr(host); err == nil {
		f.Addr = a.Unmap()
	} else {
		f.Host = host
	}
	return f
}

// watchChanges subscribes to rule changes: onChange from Config.OnChange,
// else the Decider's own OnChange if it has one. The callback must not
// block, so it only signals watchLoop, which re-decides the tunnels.
func (p *Proxy) watchChanges(onChange func(func()) func()) {
	if onChange == nil {
		if cn, ok := p.decider.(changeNotifier); ok {
			onChange = cn.OnChange
		}
	}
	if onChange == nil {
		return
	}
	p.live.kick = make(chan struct{}, 1)
	p.unwatch = sync.OnceFunc(onChange(func() {
		select {
		case p.live.kick <- struct{}{}:
		default: // a re-decision is pending already and will see this change
		}
	}))
	p.watchDone = make(chan struct{})
	go p.watchLoop()
}

// redecideEvery is how often open tunnels are decided again without a
// change: a rule's phase, window or schedule moves with the clock, and the
// engine tells of no such moment.
const redecideEvery = time.Second

func (p *Proxy) watchLoop() {
	defer close(p.watchDone)
	tick := time.NewTicker(redecideEvery)
	defer tick.Stop()
	for {
		select {
		case <-p.ctx.Done():
			return
		case <-p.live.kick:
			p.redecideAll()
		case <-tick.C:
			p.redecideAll()
		}
	}
}

// redecideAll decides every open connection again and applies on_existing.
func (p *Proxy) redecideAll() {
	for _, c := range p.live.snapshot() {
		p.redecide(c)
	}
}

// redecide decides t again and acts on the answer.
func (p *Proxy) redecide(t live) {
	if t.Done() || len(t.Flows()) == 0 {
		return
	}
	d := p.peekFlows(t.Flows())
	old := t.Decision()
	if sameFault(d, old) {
		return
	}
	if old.Action == rules.ActionBlackhole && !d.Action.Blocking() && d.Action != rules.ActionTLSReset {
		// A connection held in silence that no rule blocks any more
		// would wait for --blackhole-timeout: close it, and the device
		// retries at once, as a real blackhole lifting lets its next
		// attempt through. Unless its rule said keep.
		if old.OnExisting() != rules.OnExistingKeep {
			p.logLive("live connection: released from a blackhole by a rule change", t, old)
			t.Cut()
		}
		return
	}
	if old.Action == rules.ActionBlackhole && d.Action == rules.ActionBlackhole {
		t.Degrade(d) // another blackhole rule: it holds on
		return
	}
	if d.Rule == nil || d.Action == rules.ActionAllow {
		// No rule holds the tunnel back any more: lift a fault it was
		// under, unless its rule said keep.
		if old.OnExisting() != rules.OnExistingKeep && hasByteFault(old) {
			p.log.Info("live tunnel: fault lifted", "client", t.Client(), "was", old.String())
			t.Degrade(d)
		}
		return
	}
	switch d.OnExisting() {
	case rules.OnExistingCut:
		p.logLive("live tunnel: cut by a rule change", t, d)
		t.Cut()
	case rules.OnExistingDegrade:
		p.logLive("live tunnel: degraded by a rule change", t, d)
		t.Degrade(d)
	}
}

// sameFault reports whether decisions a and b do the same to a tunnel:
// the same rule, action and fault parameters (a rule with phases keeps
// its pointer from phase to phase).
func sameFault(a, b rules.Decision) bool {
	if a.Rule != b.Rule || a.Action != b.Action {
		return false
	}
	pa, pb := a.Params(), b.Params()
	if pa == nil || pb == nil || pa == pb {
		return pa == pb
	}
	return pa.Latency == pb.Latency && pa.Jitter == pb.Jitter && pa.Rate == pb.Rate &&
		pa.AfterBytes == pb.AfterBytes && pa.After == pb.After && pa.Direction == pb.Direction &&
		pa.DelayOn == pb.DelayOn && pa.Close == pb.Close
}

// peekFlows re-asks the questions of a tunnel and folds the answers the
// way decide does: the first decision that keeps the flow from its
// destination wins, else the first rule that matched.
func (p *Proxy) peekFlows(flows []rules.Flow) rules.Decision {
	var out rules.Decision
	for _, f := range flows {
		var d rules.Decision
		if pk, ok := p.decider.(peeker); ok {
			d = pk.Peek(f)
		} else {
			d = p.decider.Decide(f)
		}
		if d.Action.Blocking() || d.Action == rules.ActionTLSReset {
			return d
		}
		if d.Matched() && !out.Matched() {
			out = d
		}
	}
	return out
}

func (p *Proxy) logLive(msg string, t live, d rules.Decision) {
	attrs := append([]slog.Attr{slog.String("client", t.Client())}, d.LogAttrs()...)
	p.log.LogAttrs(context.Background(), slog.LevelInfo, msg, attrs...)
}
