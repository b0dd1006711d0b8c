package rules

import (
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
)

// Engine decides flows against the active scenarios. It holds an immutable
// compiled snapshot and swaps it atomically, so Decide never waits for a
// reload and a reload never sees a half-built index.
type Engine struct {
	snap atomic.Pointer[snapshot]
}

// NewEngine returns an engine deciding with set's scenarios named in active,
// in that order of priority (earlier scenarios' rules win).
func NewEngine(set *Set, active []string) (*Engine, error) {
	e := &Engine{}
	if err := e.Swap(set, active); err != nil {
		return nil, err
	}
	return e, nil
}

// Swap compiles set with the active scenarios and puts it in force. On error
// the rules in force stay as they were.
func (e *Engine) Swap(set *Set, active []string) error {
	s, err := compile(set, active)
	if err != nil {
		return err
	}
	e.snap.Store(s)
	return nil
}

// Set returns the rule set in force.
func (e *Engine) Set() *Set { return e.snap.Load().set }

// Active returns the active scenarios, in priority order.
func (e *Engine) Active() []*Scenario { return slices.Clone(e.snap.Load().active) }

// Decide returns what happens to f: the first matching rule of the active
// scenarios, or a plain allow. It allocates nothing and its cost does not
// grow with the number of domains or address prefixes.
func (e *Engine) Decide(f Flow) Decision {
	return e.snap.Load().decide(&f)
}

// snapshot is the compiled, immutable form of the active scenarios.
type snapshot struct {
	set     *Set
	active  []*Scenario
	rules   []*Rule    // every active rule; a rule's priority is its index
	lists   [][]int32  // rule lists, each ascending; list 0 is empty
	names   *nameTable // domains and hosts
	addrs   *addrTable // prefixes
	regex   []int32    // rules whose service has regexes
	always  []int32    // rules that match without a name or address
	content bool       // some rule needs HTTP content (Rule.NeedsContent)
}

func compile(set *Set, active []string) (*snapshot, error) {
	s := &snapshot{set: set, lists: [][]int32{nil}, addrs: newAddrTable()}
	var unknown []string
	nnames := 0
	for _, name := range active {
		sc := set.Scenario(name)
		if sc == nil {
			unknown = append(unknown, name)
			continue
		}
		if slices.Contains(s.active, sc) {
			continue
		}
		s.active = append(s.active, sc)
		for _, r := range sc.Rules {
			s.rules = append(s.rules, r)
			if r.svc != nil {
				nnames += r.svc.NumNames()
			}
		}
	}
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
		s.content = s.content || r.content
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

func (s *snapshot) decide(f *Flow) Decision {
	best := s.first(f)
	if best == none {
		return Decision{}
	}
	r := s.rules[best]
	if !r.Action.AppliesTo(f.Layer) {
		// The first matching rule wins at every layer; where its action
		// means nothing (an http_error at the DNS layer), the flow passes
		// untouched so that a later layer can apply it, and a broader
		// rule further down does not win instead.
		return Decision{Action: ActionAllow, Rule: r}
	}
	return Decision{Action: r.Action, Rule: r}
}

// first returns the priority of the first rule that matches f, or none.
func (s *snapshot) first(f *Flow) int32 {
	best := none
	// consider lowers best to the first rule of list that matches f.
	consider := func(list uint32) {
		for _, id := range s.lists[list] {
			if id >= best {
				return
			}
			if s.rules[id].matches(f) {
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
				if re.MatchString(host) && r.matches(f) {
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
		if s.rules[id].matches(f) {
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
	return e.snap.Load().needsContent(&f)
}

func (s *snapshot) needsContent(f *Flow) bool {
	if !s.content {
		return false
	}
	// Rules after the first that matches f outright never see its
	// requests; the first itself may need them (http_error by name).
	bound := s.first(f)
	if bound != none && s.rules[bound].content {
		return true
	}
	found := false
	check := func(list uint32) {
		for _, id := range s.lists[list] {
			if id >= bound || found {
				return
			}
			if r := s.rules[id]; r.content && r.matchesDest(f) {
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
			if !r.content {
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
		if r := s.rules[id]; r.content && r.matchesDest(f) {
			found = true
		}
	}
	return found
}

// maxNameLen is the longest DNS name in text form, without the final dot.
const maxNameLen = 253

func trimDot(h string) string {
	if n := len(h); n > 0 && h[n-1] == '.' {
		return h[:n-1]
	}
	return h
}
