package proxy

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/chaos-unicorn/unicorn/proxy/fault"
	"github.com/chaos-unicorn/unicorn/rules"
)

// The live registry holds every open tunnel with the questions that were
// asked about it. When the rules change (a scenario switched on or off,
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
// unless the old rule says keep.

// peeker decides a flow without side effects; *rules.Engine is one.
type peeker interface {
	Peek(rules.Flow) rules.Decision
}

// changeNotifier tells of rule changes; *rules.Engine is one.
type changeNotifier interface {
	OnChange(fn func()) (remove func())
}

// liveSet is the registry of open tunnels.
type liveSet struct {
	mu      sync.Mutex
	tunnels map[*tunnel]struct{}
	kick    chan struct{} // one pending re-decision at most
}

func (l *liveSet) add(t *tunnel) {
	l.mu.Lock()
	if l.tunnels == nil {
		l.tunnels = make(map[*tunnel]struct{})
	}
	l.tunnels[t] = struct{}{}
	l.mu.Unlock()
}

func (l *liveSet) remove(t *tunnel) {
	l.mu.Lock()
	delete(l.tunnels, t)
	l.mu.Unlock()
}

// Tunnels returns the number of open tunnels.
func (l *liveSet) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.tunnels)
}

func (l *liveSet) snapshot() []*tunnel {
	l.mu.Lock()
	defer l.mu.Unlock()
	ts := make([]*tunnel, 0, len(l.tunnels))
	for t := range l.tunnels {
		ts = append(ts, t)
	}
	return ts
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

// redecideAll decides every open tunnel again and applies on_existing.
func (p *Proxy) redecideAll() {
	for _, t := range p.live.snapshot() {
		p.redecide(t)
	}
}

// redecide decides t again and acts on the answer.
func (p *Proxy) redecide(t *tunnel) {
	if t.ctx.Err() != nil || len(t.flows) == 0 {
		return
	}
	d := p.peekFlows(t.flows)
	old := t.Decision()
	if sameFault(d, old) {
		return
	}
	if d.Rule == nil || d.Action == rules.ActionAllow {
		// No rule holds the tunnel back any more: lift a fault it was
		// under, unless its rule said keep.
		if old.OnExisting() != rules.OnExistingKeep && hasByteFault(old) {
			p.log.Info("live tunnel: fault lifted", "client", t.client.RemoteAddr().String(), "was", old.String())
			t.setDecision(d, false)
		}
		return
	}
	switch d.OnExisting() {
	case rules.OnExistingCut:
		p.logLive("live tunnel: cut by a rule change", t, d)
		t.abort(fault.ErrReset)
	case rules.OnExistingDegrade:
		p.logLive("live tunnel: degraded by a rule change", t, d)
		t.setDecision(d, false)
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

func (p *Proxy) logLive(msg string, t *tunnel, d rules.Decision) {
	attrs := append([]slog.Attr{slog.String("client", t.client.RemoteAddr().String())}, d.LogAttrs()...)
	p.log.LogAttrs(context.Background(), slog.LevelInfo, msg, attrs...)
}
