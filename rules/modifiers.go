package rules

import (
	"fmt"
	"strings"
	"sync/atomic"
	"time"
)

// Modifiers say when a rule acts. Every modifier a rule has must agree;
// when one says "not now", the rule is skipped for that flow and later
// rules may match it, as if the rule were not there (see rules/README.md).
//
// Time modifiers (Window, Schedule, Phases) read the engine's clock and
// consume nothing. Count modifiers (First, Every, Probability) count the
// flows the rule would act on: a flow that reached the rule (no earlier
// rule took it), at a layer where the rule's action applies, decided by
// Engine.Decide (never by Peek). The n-th such flow since the scenario was
// switched on acts when n <= First, n is a multiple of Every, and the n-th
// draw of the rule's seeded stream falls under Probability.
type Modifiers struct {
	// Probability is the chance, in (0, 1], that the rule acts on a flow;
	// 0 means the modifier is not given (always).
	Probability float64
	// First makes the rule act on the first First flows only; Every on
	// every Every-th flow. 0: not given.
	First, Every uint64
	// Window and Schedule bound the times the rule acts; nil: any time.
	Window   *Window
	Schedule *Schedule
	// Phases, if given, replace the rule's action over time: each phase
	// lasts For from the end of the one before, counted from when the
	// scenario was switched on. A last phase without For lasts for ever;
	// after a last phase with For, the rule no longer acts.
	Phases []Phase

	chance chance
	ends   []time.Duration // ends[i]: when phase i ends, from the switch; 0 on an endless last phase
}

// Phase is one stage of a rule with phases: for how long, and what it does.
type Phase struct {
	For    time.Duration // 0 only on the last phase: for ever
	Action Action
	Params Params
	Pos    Pos
}

// counted reports whether m has a count modifier.
func (m *Modifiers) counted() bool { return m.First > 0 || m.Every > 0 || m.Probability > 0 }

// timed reports whether m reads the clock.
func (m *Modifiers) timed() bool { return m.Window != nil || m.Schedule != nil || len(m.Phases) > 0 }

// finish precomputes what evaluation needs; the loader calls it once.
func (m *Modifiers) finish() {
	if m.Probability > 0 {
		m.chance = newChance(m.Probability)
	}
	m.ends = m.ends[:0]
	var end time.Duration
	for _, p := range m.Phases {
		if p.For == 0 {
			m.ends = append(m.ends, 0)
			break
		}
		end += p.For
		m.ends = append(m.ends, end)
	}
}

// phaseAt returns the phase in force elapsed after the switch, or -1 when
// every phase is over. A rule without phases is in phase 0.
func (m *Modifiers) phaseAt(elapsed time.Duration) int {
	if len(m.Phases) == 0 {
		return 0
	}
	elapsed = max(elapsed, 0)
	for i, end := range m.ends {
		if end == 0 || elapsed < end {
			return i
		}
	}
	return -1
}

// when returns the phase the rule is in at now, for a scenario switched on
// at since, or -1 when a time modifier says "not now".
func (m *Modifiers) when(now, since time.Time) int {
	if m.Window != nil && !m.Window.Active(now) {
		return -1
	}
	if m.Schedule != nil && !m.Schedule.Active(now) {
		return -1
	}
	return m.phaseAt(now.Sub(since))
}

// acts reports whether the count modifiers let the rule act on its n-th
// flow (n from 1) under seed; key is the rule's probability stream.
func (m *Modifiers) acts(n, seed, key uint64) bool {
	if m.First > 0 && n > m.First {
		return false
	}
	if m.Every > 0 && n%m.Every != 0 {
		return false
	}
	return m.Probability == 0 || m.chance.hit(draw(seed, key, n))
}

// needsContent reports whether some phase's action needs HTTP content.
func (m *Modifiers) needsContent() bool {
	for _, p := range m.Phases {
		if p.Action == ActionHTTPError || p.Action == ActionRPCError || p.Action == ActionTLSFail {
			return true
		}
	}
	return false
}

// resetsTLS reports whether the rule may decide tls_reset: its action, or
// a phase's.
func (r *Rule) resetsTLS() bool {
	if r.Action == ActionTLSReset {
		return true
	}
	if r.Modifiers != nil {
		for _, p := range r.Modifiers.Phases {
			if p.Action == ActionTLSReset {
				return true
			}
		}
	}
	return false
}

// describe is the modifiers in Rule.Describe's form, phases excepted.
func (m *Modifiers) describe() string {
	var parts []string
	if m.Probability > 0 {
		parts = append(parts, fmt.Sprintf("probability=%g", m.Probability))
	}
	if m.First > 0 {
		parts = append(parts, fmt.Sprintf("first=%d", m.First))
	}
	if m.Every > 0 {
		parts = append(parts, fmt.Sprintf("every=%d", m.Every))
	}
	if m.Window != nil {
		parts = append(parts, "window="+m.Window.String())
	}
	if m.Schedule != nil {
		parts = append(parts, fmt.Sprintf("schedule=%q for=%s zone=%s", m.Schedule.Cron, m.Schedule.For, m.Schedule.Loc))
	}
	return strings.Join(parts, " ")
}

// describePhases is the phases in Rule.Describe's form.
func (m *Modifiers) describePhases() string {
	var b strings.Builder
	b.WriteString("phases")
	for _, p := range m.Phases {
		b.WriteString(" [")
		if p.For > 0 {
			b.WriteString(p.For.String())
		} else {
			b.WriteString("then")
		}
		b.WriteString(" " + p.Action.String())
		if s := p.Params.describe(p.Action); s != "" {
			b.WriteString(" " + s)
		}
		b.WriteString("]")
	}
	return b.String()
}

// ruleRun is the engine's state for one compiled rule: its parameters per
// phase, bound to the engine's seed, and its draw streams.
type ruleRun struct {
	params []Params // one per phase (one for a rule without phases)
	chance uint64   // key of the probability stream
	stream stream   // jitter
}

// bind gives every rule of c its engine state under seed. It runs once
// per compile, before the snapshot is stored.
func (c *compiled) bind(seed *atomic.Uint64) {
	c.seed = seed
	c.runs = make([]ruleRun, len(c.rules))
	c.start = make([]int32, len(c.scenarios))
	for i := len(c.rules) - 1; i >= 0; i-- {
		c.start[c.scen[i]] = int32(i)
	}
	for i, r := range c.rules {
		run := &c.runs[i]
		run.chance = ruleKey(r.Scenario, r.Index, "probability")
		run.stream.seed, run.stream.key = seed, ruleKey(r.Scenario, r.Index, "jitter")
		if m := r.Modifiers; m != nil && len(m.Phases) > 0 {
			for _, p := range m.Phases {
				run.params = append(run.params, p.Params)
			}
		} else {
			run.params = []Params{r.Params}
		}
		for j := range run.params {
			run.params[j].rnd = &run.stream
		}
	}
}

// counts are the count modifiers' counters of one switch-on of one
// scenario, indexed by rule from the scenario's first: a switch starts
// them again from zero.
type counts []atomic.Uint64

// clock reads the engine's time at most once per decision, and only for
// a rule with time modifiers.
type clock struct {
	e    *Engine
	t    time.Time
	read bool
	// anyTime makes every rule act whatever its time modifiers say.
	anyTime bool
}

func (c *clock) now() time.Time {
	if !c.read {
		c.t, c.read = c.e.Now(), true
	}
	return c.t
}

// phase returns the phase rule id is in now, or -1 when a time modifier
// says "not now"; 0 for a rule without time modifiers.
func (s *snapshot) phase(id int32, c *clock) int {
	m := s.rules[id].Modifiers
	if m == nil || !m.timed() {
		return 0
	}
	return m.when(c.now(), s.act.since[s.scen[id]])
}

// counted reports whether rule id, the first whose match and time let it
// act on f, acts on f by its count modifiers. With consume, f counts as
// one of the rule's flows (Decide); without, the answer is the one the
// next flow would get (Peek). A rule whose action means nothing at f's
// layer passes f without counting it.
func (s *snapshot) counted(id int32, f *Flow, c *clock, consume bool) bool {
	r := s.rules[id]
	m := r.Modifiers
	if m == nil || !m.counted() {
		return true
	}
	a := r.Action
	if len(m.Phases) > 0 {
		if p := s.phase(id, c); p >= 0 {
			a = m.Phases[p].Action
		}
	}
	if !a.AppliesTo(f.Layer) {
		return true
	}
	i := s.scen[id]
	ctr := &s.act.counts[i][id-s.start[i]]
	var n uint64
	if consume {
		n = ctr.Add(1)
	} else {
		n = ctr.Load() + 1
	}
	return m.acts(n, s.seed.Load(), s.runs[id].chance)
}

// now reports whether rule id's time modifiers let it act now.
func (s *snapshot) now(id int32, c *clock) bool {
	return s.rules[id].Modifiers == nil || c.anyTime || s.phase(id, c) >= 0
}

// contentNow is Rule.NeedsContent for rule id's current phase: a rule
// whose later phase needs HTTP content decides a tunnel outright while it
// rejects or delays it.
func (s *snapshot) contentNow(id int32, c *clock) bool {
	r := s.rules[id]
	m := r.Modifiers
	if !r.content || r.http != nil || m == nil || len(m.Phases) == 0 {
		return r.content
	}
	switch m.Phases[max(s.phase(id, c), 0)].Action {
	case ActionHTTPError, ActionRPCError, ActionTLSFail:
		return true
	}
	return false
}

// decide is what Decide (consume) and Peek do once id, the first rule
// whose match and time let it act on f, is found: the first rule from id
// on whose count modifiers let it act too, or none.
func (s *snapshot) decide(id int32, f *Flow, c *clock, consume bool) int32 {
	for id != none && s.rules[id].Modifiers != nil && !s.counted(id, f, c, consume) {
		id = s.first(f, id, c)
	}
	return id
}

// Seed returns the seed of the engine's random outcomes.
func (e *Engine) Seed() uint64 { return e.seed.Load() }

// SetSeed sets the seed of the engine's random outcomes (probability:
// draws and delay jitter). Set it before traffic flows: with the same seed
// and the same sequence of flows, the engine decides the same way.
func (e *Engine) SetSeed(seed uint64) { e.seed.Store(seed) }

// RuleState says, in a line, how rule r's modifiers stand now: the phase
// it is in, whether its window or schedule is open, how many flows its
// count modifiers have seen. It returns "" for a rule without modifiers or
// one not loaded.
func (e *Engine) RuleState(r *Rule) string {
	m := r.Modifiers
	if m == nil {
		return ""
	}
	s := e.snap.Load()
	id := int32(-1)
	for i, x := range s.rules {
		if x == r {
			id = int32(i)
		}
	}
	if id < 0 {
		return ""
	}
	now := e.Now()
	i := s.scen[id]
	var parts []string
	if m.Window != nil {
		parts = append(parts, "window "+openText(m.Window.Active(now)))
	}
	if m.Schedule != nil {
		parts = append(parts, "schedule "+openText(m.Schedule.Active(now)))
	}
	if len(m.Phases) > 0 {
		if !s.act.on[i] {
			parts = append(parts, "phases start when the scenario is switched on")
		} else {
			el := max(now.Sub(s.act.since[i]), 0).Truncate(time.Second)
			p := m.phaseAt(el)
			switch {
			case p < 0:
				parts = append(parts, fmt.Sprintf("every phase is over (%s since the switch): the rule no longer acts", el))
			case m.ends[p] == 0:
				parts = append(parts, fmt.Sprintf("phase %d of %d (%s) since %s after the switch, for ever", p+1, len(m.Phases), m.Phases[p].Action, startOf(m, p)))
			default:
				parts = append(parts, fmt.Sprintf("phase %d of %d (%s) until %s after the switch (now %s)", p+1, len(m.Phases), m.Phases[p].Action, m.ends[p], el))
			}
		}
	}
	if m.counted() {
		n := s.act.counts[i][id-s.start[i]].Load()
		parts = append(parts, fmt.Sprintf("%d flow(s) counted", n))
		if m.First > 0 {
			parts = append(parts, fmt.Sprintf("first %d: %d left", m.First, m.First-min(n, m.First)))
		}
	}
	return strings.Join(parts, "; ")
}

func openText(open bool) string {
	if open {
		return "open now"
	}
	return "closed now: the rule is skipped"
}

func startOf(m *Modifiers, p int) time.Duration {
	if p == 0 {
		return 0
	}
	return m.ends[p-1]
}

// String is the modifiers as Rule.Describe shows them: the phases, then
// the others (probability=0.3 first=2 ...).
func (m *Modifiers) String() string {
	var parts []string
	if len(m.Phases) > 0 {
		parts = append(parts, m.describePhases())
	}
	if s := m.describe(); s != "" {
		parts = append(parts, s)
	}
	return strings.Join(parts, " ")
}

// Candidates returns what the rules could decide about f now, in priority
// order: the decision of each rule that matches f and whose time modifiers
// let it act, up to the first that acts on every such flow. The rules
// before that one have count modifiers (first:, every:, probability:):
// they act on some flows and pass the others on to the next. The list
// ends with a plain allow when no rule would take every flow. Like Peek,
// it has no side effects; it is for explaining a target.
func (e *Engine) Candidates(f Flow) []Decision {
	s := e.snap.Load()
	c := clock{e: e}
	var out []Decision
	for id := s.first(&f, -1, &c); ; id = s.first(&f, id, &c) {
		if id == none {
			return append(out, Decision{})
		}
		d := s.decision(id, &f, &c)
		out = append(out, d)
		m := s.rules[id].Modifiers
		if m == nil || !m.counted() || d.params == nil {
			// d.params is nil where the action means nothing at f's
			// layer: the rule passes f without counting it.
			return out
		}
	}
}

// Waiting returns the rules that match f but that their window, schedule
// or phases keep from acting now, in priority order: the rules a tester
// may wonder about when explaining a target.
func (e *Engine) Waiting(f Flow) []*Rule {
	s := e.snap.Load()
	all := clock{e: e, anyTime: true}
	now := clock{e: e}
	var out []*Rule
	for id := s.first(&f, -1, &all); id != none; id = s.first(&f, id, &all) {
		if m := s.rules[id].Modifiers; m != nil && m.timed() && s.phase(id, &now) < 0 {
			out = append(out, s.rules[id])
		}
	}
	return out
}
