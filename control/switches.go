package control

import (
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/chaos-unicorn/unicorn/rules"
)

// Switches turns scenarios on and off through the engine, optionally for
// a while: a timed switch reverts to the state before it when its time is
// up (timed by the injected Clock). An untimed switch of the same scenario
// cancels a pending revert.
type Switches struct {
	e     *rules.Engine
	clock Clock
	log   *slog.Logger

	mu      sync.Mutex
	pending map[string]*revert
}

// revert is a pending auto-revert of one scenario.
type revert struct {
	at      time.Time
	timer   Timer
	on      bool           // the state to go back to
	clients []netip.Prefix // and its device scope
}

// NewSwitches returns the switches of e. clock nil means SystemClock; log
// nil means slog.Default().
func NewSwitches(e *rules.Engine, clock Clock, log *slog.Logger) *Switches {
	if clock == nil {
		clock = SystemClock{}
	}
	if log == nil {
		log = slog.Default()
	}
	return &Switches{e: e, clock: clock, log: log.With(slog.String("component", "control")), pending: map[string]*revert{}}
}

// Set switches scenario name on (for the devices in clients; nil: every
// device) or off. With d > 0 the switch lasts d, then the scenario goes
// back to the state it had before (before the first of several timed
// switches in a row).
func (s *Switches) Set(name string, on bool, clients []netip.Prefix, d time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	prev, ok := s.state(name)
	if !ok {
		// Let the engine say what is loaded.
		return s.e.Switch(name, on, clients)
	}
	old := s.pending[name]
	if old != nil {
		old.timer.Stop()
		delete(s.pending, name)
		prev.On, prev.Clients = old.on, old.clients
	}
	if err := s.e.Switch(name, on, clients); err != nil {
		return err
	}
	// A timed switch to the state it would revert to reverts nothing.
	if d > 0 && (on != prev.On || on && !slices.Equal(clients, prev.Clients)) {
		rv := &revert{at: s.clock.Now().Add(d), on: prev.On, clients: prev.Clients}
		rv.timer = s.clock.AfterFunc(d, func() { s.fire(name, rv) })
		s.pending[name] = rv
	}
	return nil
}

// state returns the engine's state of scenario name.
func (s *Switches) state(name string) (rules.ScenarioState, bool) {
	for _, st := range s.e.Scenarios() {
		if st.Scenario.Name == name {
			return st, true
		}
	}
	return rules.ScenarioState{}, false
}

func (s *Switches) fire(name string, rv *revert) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pending[name] != rv {
		return // replaced or cancelled meanwhile
	}
	delete(s.pending, name)
	if err := s.e.Switch(name, rv.on, rv.clients); err != nil {
		s.log.Error("auto-revert failed", slog.String("scenario", name), slog.Any("err", err))
		return
	}
	s.log.Info("scenario auto-reverted", slog.String("scenario", name), slog.Bool("on", rv.on), slog.String("clients", prefixes(rv.clients)))
}

// Reset switches every scenario off and cancels every pending revert.
func (s *Switches) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for name, rv := range s.pending {
		rv.timer.Stop()
		delete(s.pending, name)
	}
	s.e.Reset()
}

// RevertAt returns when scenario name goes back, if a timed switch is
// pending for it.
func (s *Switches) RevertAt(name string) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if rv := s.pending[name]; rv != nil {
		return rv.at, true
	}
	return time.Time{}, false
}

// ResolveClients turns device specs into prefixes: each is a device group
// named in the rules' devices:, an address or a CIDR. No specs gives nil
// (every device).
func ResolveClients(set *rules.Set, specs []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, spec := range specs {
		spec = strings.TrimSpace(spec)
		if spec == "" {
			continue
		}
		if g, ok := set.Devices[spec]; ok {
			out = append(out, g...)
			continue
		}
		p, err := rules.ParsePrefix(spec)
		if err != nil {
			groups := make([]string, 0, len(set.Devices))
			for n := range set.Devices {
				groups = append(groups, n)
			}
			sort.Strings(groups)
			have := "none is defined (devices: in a rule file)"
			if len(groups) > 0 {
				have = strings.Join(groups, ", ")
			}
			return nil, fmt.Errorf("clients %q is not a device group, an address or a CIDR (groups: %s; or e.g. 192.0.2.0/24)", spec, have)
		}
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out, nil
}

func prefixes(ps []netip.Prefix) string {
	if ps == nil {
		return "every device"
	}
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ", ")
}
