package rules

import (
	"fmt"
	"log/slog"
	"net/netip"
)

// Pos is a position in a rule file.
type Pos struct {
	File      string
	Line, Col int
}

func (p Pos) String() string {
	if p.Line == 0 {
		return p.File
	}
	return fmt.Sprintf("%s:%d", p.File, p.Line)
}

// Rule is one compiled rule of a scenario. Rules are immutable once loaded.
type Rule struct {
	// Scenario is the name of the scenario the rule belongs to.
	Scenario string
	// Index is the rule's position in its scenario's rules: list, from 0.
	Index int
	// Pos is where the rule starts in its file.
	Pos Pos
	// Service names the service the rule matches, or "" for a rule that
	// lists its own match fields.
	Service string
	// Action and Params say what happens to a matching flow.
	Action Action
	Params Params
	// Modifiers say when the rule acts (probability, first, every, window,
	// schedule, phases); nil: on every flow it matches. A rule with phases
	// has the first phase's Action and Params.
	Modifiers *Modifiers
	// OnExisting is what the rule does to connections already open when
	// it starts deciding them; OnExistingDefault when the file names
	// none (see Existing).
	OnExisting OnExisting

	svc     *Service       // what the rule matches; nil matches every flow
	clients []netip.Prefix // devices the rule applies to; nil means all
	http    *httpMatch     // what it asks of an HTTP request; nil: nothing
	// content is set when the rule needs to see HTTP content: it has
	// content fields, or an action only an intercepting proxy can apply.
	content bool
}

// NeedsContent reports whether the rule needs the HTTP content of the
// flows it matches: it matches methods, paths or request headers, or its
// action is http_error, rpc_error or tls_fail.
func (r *Rule) NeedsContent() bool { return r.content }

// matches reports whether the rule applies to f, given that f's name or
// address already matched the rule's service (or the service has none).
// Whether the action means anything at f's layer is not its concern: the
// first matching rule wins at every layer (see snapshot.decide).
func (r *Rule) matches(f *Flow) bool {
	if r.http != nil && !r.http.match(f) {
		return false
	}
	return r.matchesDest(f)
}

// matchesDest is matches without the rule's HTTP content fields.
func (r *Rule) matchesDest(f *Flow) bool {
	if r.svc != nil && !r.svc.portMatch(f.Port, f.Proto) {
		return false
	}
	if r.clients != nil {
		c := f.Client.Unmap().WithZone("") // fe80::1%eth0 is in fe80::/10
		for _, p := range r.clients {
			if p.Contains(c) {
				return true
			}
		}
		return false
	}
	return true
}

// AppliesToClient reports whether the rule can act on flows from the
// device at a: it names no clients, or a is among them.
func (r *Rule) AppliesToClient(a netip.Addr) bool {
	if r.clients == nil {
		return true
	}
	a = a.Unmap().WithZone("")
	for _, p := range r.clients {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// Ref is the short reference used in logs, pages and headers:
// "cud-2019 rules[1] (scenarios/cud-2019.yaml:41)".
func (r *Rule) Ref() string {
	return fmt.Sprintf("%s rules[%d] (%s)", r.Scenario, r.Index, r.Pos)
}

// Decision is what the Engine concluded about one flow. The zero value
// allows the flow: no rule matched.
type Decision struct {
	// Action is what the front end must do.
	Action Action
	// Rule is the rule that decided, nil when no rule matched.
	Rule *Rule

	params *Params // the engine's copy: of the current phase, with seeded jitter
}

// Params returns the parameters of the deciding rule (of its current phase
// for a rule with phases), or nil for a plain allow.
func (d Decision) Params() *Params {
	if d.params != nil {
		return d.params
	}
	if d.Rule == nil {
		return nil
	}
	return &d.Rule.Params
}

// Matched reports whether a rule decided (including an allow rule that
// makes an exception).
func (d Decision) Matched() bool { return d.Rule != nil }

// Scenario returns the deciding rule's scenario, or "".
func (d Decision) Scenario() string {
	if d.Rule == nil {
		return ""
	}
	return d.Rule.Scenario
}

// LogAttrs returns the attributes front ends log with a decision.
func (d Decision) LogAttrs() []slog.Attr {
	if d.Rule == nil {
		return []slog.Attr{slog.String("action", d.Action.String())}
	}
	return []slog.Attr{
		slog.String("action", d.Action.String()),
		slog.String("scenario", d.Rule.Scenario),
		slog.Int("rule", d.Rule.Index),
		slog.String("rule_pos", d.Rule.Pos.String()),
		slog.String("service", d.Rule.Service),
	}
}

func (d Decision) String() string {
	if d.Rule == nil {
		return d.Action.String() + " (no rule matched)"
	}
	return d.Action.String() + " by " + d.Rule.Ref()
}

// Decider answers what happens to a flow. *Engine implements it; front-end
// unit tests may use a DeciderFunc.
type Decider interface {
	Decide(f Flow) Decision
}

// DeciderFunc adapts a function to the Decider interface.
type DeciderFunc func(Flow) Decision

// Decide calls fn(f).
func (fn DeciderFunc) Decide(f Flow) Decision { return fn(f) }
