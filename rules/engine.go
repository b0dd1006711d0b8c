package rules

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Engine decides flows against the scenarios that are switched on. Every
// scenario of the rule set is compiled once into an immutable snapshot;
// which scenarios are on, and for which devices, is a small part of that
// snapshot that a switch replaces. The snapshot is swapped atomically, so
// Decide never waits for a switch or a reload and never sees a half-built
// index.
type Engine struct {
	snap atomic.Pointer[snapshot]
	now  atomic.Pointer[func() time.Time]
	obs  atomic.Pointer[func(Event)]
	seed atomic.Uint64 // of probability: draws and jitter; see SetSeed

	mu       sync.Mutex // serialises changes; Decide never takes it
	watchers map[int]func()
	nextID   int
}

// NewEngine returns an engine deciding with set's scenarios named in active
// switched on, in that order of priority (earlier scenarios' rules win);
// the set's other scenarios are loaded, off, and rank after them.
func NewEngine(set *Set, active []string) (*Engine, error) {
	e := &Engine{}
	e.seed.Store(rand.Uint64())
	if err := e.Swap(set, active); err != nil {
		return nil, err
	}
	return e, nil
}

// Swap compiles set and puts it in force with the scenarios named in active
// switched on for every device, and every other scenario off. On error the
// rules in force stay as they were.
func (e *Engine) Swap(set *Set, active []string) error {
	if set == nil {
		return fmt.Errorf("no rule set")
	}
	e.mu.Lock()
	c, err := compile(set, active)
	if err != nil {
		e.mu.Unlock()
		return err
	}
	c.bind(&e.seed)
	now := e.Now()
	act := c.newActivation()
	for i, sc := range c.scenarios {
		if slices.Contains(active, sc.Name) {
			act.on[i], act.since[i] = true, now
		}
	}
	act.update(c)
	e.snap.Store(&snapshot{compiled: c, act: act})
	return e.changed()
}

// Reload compiles set and puts it in force, keeping each scenario's state
// by name: a scenario that was on stays on for the same devices, and a
// scenario new to the set comes in off (switch it on by name). Priority
// follows the previous order, then the new scenarios in load order. On
// error the rules in force stay.
func (e *Engine) Reload(set *Set) error {
	if set == nil {
		return fmt.Errorf("no rule set to reload")
	}
	e.mu.Lock()
	old := e.snap.Load()
	var order []string
	for _, sc := range old.scenarios {
		if set.Scenario(sc.Name) != nil {
			order = append(order, sc.Name)
		}
	}
	c, err := compile(set, order)
	if err != nil {
		e.mu.Unlock()
		return err
	}
	c.bind(&e.seed)
	act := c.newActivation()
	for i, sc := range c.scenarios {
		if j := old.index(sc.Name); j >= 0 {
			act.on[i], act.scope[i], act.since[i] = old.act.on[j], old.act.scope[j], old.act.since[j]
		}
	}
	act.update(c)
	e.snap.Store(&snapshot{compiled: c, act: act})
	return e.changed()
}

// Switch turns the scenario called name on for the devices in clients (nil:
// every device), or off. Switching on a scenario that is on replaces its
// device scope. A scenario's rules act only on flows from its scope; a
// rule's own clients: apply on top. It never recompiles: the change is in
// force for the next Decide.
func (e *Engine) Switch(name string, on bool, clients []netip.Prefix) error {
	e.mu.Lock()
	s := e.snap.Load()
	i := s.index(name)
	if i < 0 {
		e.mu.Unlock()
		return fmt.Errorf("no scenario %s (loaded: %s)", name, strings.Join(s.scenarioNames(), ", "))
	}
	act := s.act.clone()
	act.on[i], act.since[i] = on, e.Now()
	act.counts[i] = make(counts, len(s.scenarios[i].Rules)) // first:, every: count from the switch
	act.scope[i] = nil
	if on && clients != nil {
		act.scope[i] = slices.Clone(clients)
	}
	act.update(s.compiled)
	e.snap.Store(&snapshot{compiled: s.compiled, act: act})
	return e.changed()
}

// Reset switches every scenario off.
func (e *Engine) Reset() {
	e.mu.Lock()
	s := e.snap.Load()
	act := s.act.clone()
	now := e.Now()
	for i := range act.on {
		if act.on[i] {
			act.on[i], act.scope[i], act.since[i] = false, nil, now
		}
	}
	act.update(s.compiled)
	e.snap.Store(&snapshot{compiled: s.compiled, act: act})
	_ = e.changed()
}

// changed unlocks e.mu and tells the watchers, in the order they came, that
// a new state is in force. It returns nil, for the callers' convenience.
func (e *Engine) changed() error {
	fns := make([]func(), 0, len(e.watchers))
	for id := range e.nextID {
		if fn, ok := e.watchers[id]; ok {
			fns = append(fns, fn)
		}
	}
	e.mu.Unlock()
	for _, fn := range fns {
		fn()
	}
	return nil
}

// OnChange registers fn to run after every Switch, Reset, Swap and Reload,
// once the new state is in force. fn runs on the goroutine that made the
// change and must not block; it may call Peek. remove unregisters it.
func (e *Engine) OnChange(fn func()) (remove func()) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.watchers == nil {
		e.watchers = map[int]func(){}
	}
	id := e.nextID
	e.nextID++
	e.watchers[id] = fn
	return func() {
		e.mu.Lock()
		delete(e.watchers, id)
		e.mu.Unlock()
	}
}

// SetClock makes the engine read the time from now (tests inject a clock).
func (e *Engine) SetClock(now func() time.Time) { e.now.Store(&now) }

// Now is the engine's time.
func (e *Engine) Now() time.Time {
	if fn := e.now.Load(); fn != nil {
		return (*fn)()
	}
	return time.Now()
}

// SetObserver makes Decide call fn with every decision whose action is not
// ActionAllow. fn runs on the deciding goroutine: it must not block, and it
// must not keep the event's Flow.Header or Flow.RPCMethods (they are nil
// in events). nil removes the observer.
func (e *Engine) SetObserver(fn func(Event)) {
	if fn == nil {
		e.obs.Store(nil)
		return
	}
	e.obs.Store(&fn)
}

// Event is a decision that was not a plain allow, as SetObserver sees it.
type Event struct {
	Time     time.Time
	Flow     Flow // without Header and RPCMethods
	Decision Decision
}

// ScenarioState is a loaded scenario and whether it is on.
type ScenarioState struct {
	Scenario *Scenario
	On       bool
	// Clients is the device scope of a scenario that is on; nil: every device.
	Clients []netip.Prefix
	// Since is when the scenario was last switched on or off (engine clock);
	// zero if it has not been since the rules were loaded with it off.
	Since time.Time
}

// AppliesToClient reports whether the scenario is on for the device at a.
func (st ScenarioState) AppliesToClient(a netip.Addr) bool {
	return st.On && inScope(st.Clients, a)
}

// Scenarios returns every loaded scenario with its state, in priority order.
func (e *Engine) Scenarios() []ScenarioState {
	s := e.snap.Load()
	out := make([]ScenarioState, len(s.scenarios))
	for i, sc := range s.scenarios {
		out[i] = ScenarioState{Scenario: sc, On: s.act.on[i], Clients: slices.Clone(s.act.scope[i]), Since: s.act.since[i]}
	}
	return out
}

// Set returns the rule set in force.
func (e *Engine) Set() *Set { return e.snap.Load().set }

// Active returns the scenarios that are on, in priority order.
func (e *Engine) Active() []*Scenario {
	s := e.snap.Load()
	var out []*Scenario
	for i, sc := range s.scenarios {
		if s.act.on[i] {
			out = append(out, sc)
		}
	}
	return out
}

// Decide returns what happens to f: the first matching rule of the
// scenarios that are on whose modifiers let it act (a rule they hold back
// is skipped; see Modifiers), or a plain allow. It counts the deciding
// rule's hit, counts f for the count modifiers of the rules it reached,
// and passes a decision that is not an allow to the observer. It
// allocates nothing and its cost does not grow with the number of domains
// or address prefixes.
func (e *Engine) Decide(f Flow) Decision {
	s := e.snap.Load()
	c := clock{e: e}
	id := s.first(&f, -1, &c)
	if id != none && s.rules[id].Modifiers != nil {
		id = s.decide(id, &f, &c, true)
	}
	if id == none {
		return Decision{}
	}
	s.hits[id].Add(1)
	d := s.decision(id, &f, &c)
	if d.Action != ActionAllow {
		if fn := e.obs.Load(); fn != nil {
			f.Header, f.RPCMethods = nil, nil
			(*fn)(Event{Time: e.Now(), Flow: f, Decision: d})
		}
	}
	return d
}

// Peek is Decide without side effects: no hit counted, no event, no
// count modifier consumed (a rule with first:, every: or probability:
// answers as it would for its next flow). It is for explaining a target
// and for re-deciding connections already open.
func (e *Engine) Peek(f Flow) Decision {
	s := e.snap.Load()
	c := clock{e: e}
	id := s.decide(s.first(&f, -1, &c), &f, &c, false)
	if id == none {
		return Decision{}
	}
	return s.decision(id, &f, &c)
}

// RuleHits is a rule and the number of flows it decided since it was loaded.
type RuleHits struct {
	Rule *Rule
	Hits uint64
}

// Hits returns every rule of every loaded scenario with its hit count, in
// priority order.
func (e *Engine) Hits() []RuleHits {
	s := e.snap.Load()
	out := make([]RuleHits, len(s.rules))
	for i, r := range s.rules {
		out[i] = RuleHits{Rule: r, Hits: s.hits[i].Load()}
	}
	return out
}

// snapshot is what Decide reads: the compiled rules and which scenarios are
// on. A switch makes a new snapshot sharing the compiled part.
type snapshot struct {
	*compiled
	act *activation
}

// activation is which scenarios are on, for which devices; indexed like
// compiled.scenarios. It is immutable once stored.
type activation struct {
	on    []bool
	scope [][]netip.Prefix
	since []time.Time
	// counts are the count modifiers' counters, per scenario; a switch
	// gives the scenario new ones.
	counts []counts
	// content is set when a rule of a scenario that is on needs HTTP
	// content (Rule.NeedsContent).
	content bool
	// sni is set when a rule of a scenario that is on may decide
	// tls_reset (its action or a phase's).
	sni bool
}

func (c *compiled) newActivation() *activation {
	n := len(c.scenarios)
	a := &activation{on: make([]bool, n), scope: make([][]netip.Prefix, n), since: make([]time.Time, n), counts: make([]counts, n)}
	for i, sc := range c.scenarios {
		a.counts[i] = make(counts, len(sc.Rules))
	}
	return a
}

func (a *activation) clone() *activation {
	return &activation{on: slices.Clone(a.on), scope: slices.Clone(a.scope), since: slices.Clone(a.since), counts: slices.Clone(a.counts)}
}

// update recomputes what a depends on besides the switches.
func (a *activation) update(c *compiled) {
	a.content, a.sni = false, false
	for i, r := range c.rules {
		if !a.on[c.scen[i]] {
			continue
		}
		a.content = a.content || r.content
		a.sni = a.sni || r.resetsTLS()
	}
}

// compiled is the immutable compiled form of every scenario of a set.
type compiled struct {
	set       *Set
	scenarios []*Scenario // priority order
	rules     []*Rule     // every rule; a rule's priority is its index
	scen      []uint16    // scen[i] is the index in scenarios of rules[i]'s scenario
	hits      []atomic.Uint64
	lists     [][]int32  // rule lists, each ascending; list 0 is empty
	names     *nameTable // domains and hosts
	addrs     *addrTable // prefixes
	regex     []int32    // rules whose service has regexes
	always    []int32    // rules that match without a name or address
	runs      []ruleRun  // per rule: modifier state (see bind)
	start     []int32    // start[i] is the priority of scenarios[i]'s first rule
	seed      *atomic.Uint64
}

func (c *compiled) index(name string) int {
	for i, sc := range c.scenarios {
		if sc.Name == name {
			return i
		}
	}
	return -1
}

func (c *compiled) scenarioNames() []string {
	out := make([]string, len(c.scenarios))
	for i, sc := range c.scenarios {
		out[i] = sc.Name
	}
	return out
}

// on reports whether rule id's scenario is on for f's client.
func (s *snapshot) on(id int32, f *Flow) bool {
	i := s.scen[id]
	return s.act.on[i] && inScope(s.act.scope[i], f.Client)
}

// inScope reports whether a is in scope; a nil scope holds every device.
func inScope(scope []netip.Prefix, a netip.Addr) bool {
	if scope == nil {
		return true
	}
	a = a.Unmap().WithZone("")
	for _, p := range scope {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// compile compiles every scenario of set: those named in first, in that
// order, then the others in load order.
func compile(set *Set, first []string) (*compiled, error) {
	s := &compiled{set: set, lists: [][]int32{nil}, addrs: newAddrTable()}
	var unknown []string
	order := make([]*Scenario, 0, len(set.Scenarios))
	for _, name := range first {
		sc := set.Scenario(name)
		if sc == nil {
			unknown = append(unknown, name)
		} else if !slices.Contains(order, sc) {
			order = append(order, sc)
		}
	}
	for _, sc := range set.Scenarios {
		if !slices.Contains(order, sc) {
			order = append(order, sc)
		}
	}
	if len(order) > 1<<16 {
		return nil, fmt.Errorf("%d scenarios: unicorn handles at most %d", len(order), 1<<16)
	}
	nnames := 0
	for i, sc := range order {
		s.scenarios = append(s.scenarios, sc)
		for _, r := range sc.Rules {
			s.rules = append(s.rules, r)
			s.scen = append(s.scen, uint16(i))
			if r.svc != nil {
				nnames += r.svc.NumNames()
			}
		}
	}
	s.hits = make([]atomic.Uint64, len(s.rules))
	if len(unknown) > 0 {
		var have []string
		for _, sc := range set.Scenarios {
			have = append(have, sc.Name)
		}
		return nil, fmt.Errorf("no scenario %s (loaded: %s)", strings.Join(unknown, ", "), strings.Join(have, ", "))
	}
	s.names = newNameTable(nnames)
	// extend interns list+rule so the million names of one rule share one list.
	type ext struct{ list, rule uint32 }
	interned := map[ext]uint32{}
	extend := func(list uint32, rule int32) uint32 {
		if l := s.lists[list]; len(l) > 0 && l[len(l)-1] == rule {
			return list // the same name twice in one service
		}
		k := ext{list, uint32(rule)}
		if id, ok := interned[k]; ok {
			return id
		}
		nl := append(slices.Clone(s.lists[list]), rule)
		s.lists = append(s.lists, nl)
		interned[k] = uint32(len(s.lists) - 1)
		return interned[k]
	}
	srcs := map[*nameList]uint32{}
	var srcErr error
	addNames := func(l *nameList, rule int32, exact bool) {
		if l.len() == 0 {
			return
		}
		src, ok := srcs[l]
		if !ok {
			var err error
			if src, err = s.names.addSource(l.data); err != nil {
				srcErr = err
				return
			}
			srcs[l] = src
		}
		l.each(func(name []byte, off int) {
			s.names.update(src, off, len(name), func(p listPair) listPair {
				if exact {
					p.exact = extend(p.exact, rule)
				} else {
					p.suffix = extend(p.suffix, rule)
				}
				return p
			})
		})
	}
	for i, r := range s.rules {
		id := int32(i)
		svc := r.svc
		if svc == nil || !svc.selective() {
			s.always = append(s.always, id)
			continue
		}
		addNames(&svc.domains, id, false)
		addNames(&svc.hosts, id, true)
		for _, p := range svc.Prefixes {
			s.addrs.set(p, extend(s.addrs.get(p), id))
		}
		if len(svc.Regex) > 0 {
			s.regex = append(s.regex, id)
		}
	}
	if srcErr != nil {
		return nil, srcErr
	}
	return s, nil
}

// nameLists calls fn with each rule list host leads to, until fn returns
// false: its exact-host list, then the domain list of each name along its
// labels (a.b.example.com, b.example.com, example.com, com).
func (s *snapshot) nameLists(host string, fn func(list uint32) bool) {
	for rest := host; rest != ""; {
		p := s.names.find(rest)
		if p.exact != 0 && len(rest) == len(host) && !fn(p.exact) {
			return
		}
		if p.suffix != 0 && !fn(p.suffix) {
			return
		}
		i := strings.IndexByte(rest, '.')
		if i < 0 {
			return
		}
		rest = rest[i+1:]
	}
}

// none is larger than any rule index.
const none = int32(1<<31 - 1)

// decision is what rule id, the first to act on f, decides: its action
// and parameters, those of its current phase for a rule with phases.
func (s *snapshot) decision(id int32, f *Flow, c *clock) Decision {
	r := s.rules[id]
	a, p := r.Action, 0
	if m := r.Modifiers; m != nil && len(m.Phases) > 0 {
		p = max(s.phase(id, c), 0)
		a = m.Phases[p].Action
	}
	if !a.AppliesTo(f.Layer) {
		// The first matching rule wins at every layer; where its action
		// means nothing (an http_error at the DNS layer), the flow passes
		// untouched so that a later layer can apply it, and a broader
		// rule further down does not win instead.
		return Decision{Action: ActionAllow, Rule: r}
	}
	return Decision{Action: a, Rule: r, params: &s.runs[id].params[p]}
}

// first returns the priority of the first rule after after that matches
// f and whose time modifiers let it act now, or none.
func (s *snapshot) first(f *Flow, after int32, c *clock) int32 {
	best := none
	// consider lowers best to the first rule of list that matches f.
	consider := func(list uint32) {
		for _, id := range s.lists[list] {
			if id >= best {
				return
			}
			if id > after && s.on(id, f) && s.rules[id].matches(f) && s.now(id, c) {
				best = id
				return
			}
		}
	}
	// A name longer than DNS allows is no name: walking its labels would
	// cost time that grows with the square of its length.
	if host := trimDot(f.Host); host != "" && len(host) <= maxNameLen {
		s.nameLists(host, func(list uint32) bool {
			consider(list)
			return true
		})
		for _, id := range s.regex {
			if id >= best {
				break
			}
			r := s.rules[id]
			for _, re := range r.svc.Regex {
				if id > after && s.on(id, f) && re.MatchString(host) && r.matches(f) && s.now(id, c) {
					best = id
					break
				}
			}
		}
	}
	if f.Addr.IsValid() {
		s.addrs.each(f.Addr, func(list uint32) bool {
			consider(list)
			return true
		})
	}
	for _, id := range s.always {
		if id >= best {
			break
		}
		if id > after && s.on(id, f) && s.rules[id].matches(f) && s.now(id, c) {
			best = id
			break
		}
	}
	return best
}

// NeedsContent reports whether what happens to f, a connection by name
// and/or address (a CONNECT), may depend on the HTTP requests inside it:
// some rule that needs content (see Rule.NeedsContent) matches f's
// destination, ports and client, and no rule before it decides f outright.
// A proxy intercepts such a connection to decide each request; every
// other connection can be tunnelled untouched. Like Decide, it allocates
// nothing and costs the same lookups.
func (e *Engine) NeedsContent(f Flow) bool {
	return e.snap.Load().needsContent(&f, &clock{e: e})
}

func (s *snapshot) needsContent(f *Flow, c *clock) bool {
	if !s.act.content {
		return false
	}
	// Rules after the first that matches f outright never see its
	// requests; the first itself may need them (http_error by name). A
	// rule with count modifiers may let a flow pass to later rules, so it
	// decides nothing outright.
	bound := s.first(f, -1, c)
	for bound != none && !s.rules[bound].content && s.rules[bound].Modifiers != nil && s.rules[bound].Modifiers.counted() {
		bound = s.first(f, bound, c)
	}
	if bound != none && s.contentNow(bound, c) {
		return true
	}
	found := false
	check := func(list uint32) {
		for _, id := range s.lists[list] {
			if id >= bound || found {
				return
			}
			if r := s.rules[id]; r.content && s.on(id, f) && r.matchesDest(f) {
				found = true
				return
			}
		}
	}
	if host := trimDot(f.Host); host != "" && len(host) <= maxNameLen {
		s.nameLists(host, func(list uint32) bool {
			check(list)
			return !found
		})
		for _, id := range s.regex {
			if id >= bound || found {
				break
			}
			r := s.rules[id]
			if !r.content || !s.on(id, f) {
				continue
			}
			for _, re := range r.svc.Regex {
				if re.MatchString(host) && r.matchesDest(f) {
					found = true
					break
				}
			}
		}
	}
	if f.Addr.IsValid() && !found {
		s.addrs.each(f.Addr, func(list uint32) bool {
			check(list)
			return !found
		})
	}
	for _, id := range s.always {
		if id >= bound || found {
			break
		}
		if r := s.rules[id]; r.content && s.on(id, f) && r.matchesDest(f) {
			found = true
		}
	}
	return found
}

// DecidesBySNI reports whether a rule of a scenario that is on may decide
// tls_reset, the censor's move by the name a ClientHello carries: only
// then need a proxy read the ClientHello of a tunnel it was about to
// relay blind (a CONNECT to a bare address, say) and ask about its SNI.
// It costs one atomic load.
func (e *Engine) DecidesBySNI() bool { return e.snap.Load().act.sni }

// maxNameLen is the longest DNS name in text form, without the final dot.
const maxNameLen = 253

func trimDot(h string) string {
	if n := len(h); n > 0 && h[n-1] == '.' {
		return h[:n-1]
	}
	return h
}
