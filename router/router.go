package router

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/chaos-unicorn/unicorn/rules"
)

// Defaults for zero Config fields, and bounds.
const (
	// DefaultTTL is how long router mode lasts unless renewed.
	DefaultTTL = 4 * time.Hour
	// watchEvery is how often Run checks that the table is still there.
	watchEvery = 2 * time.Second
	// lookupTimeout bounds one lookup of a blocked name.
	lookupTimeout = 3 * time.Second
	// relearnAfter is how long a name's addresses are trusted before a
	// new question for it makes the router look it up again.
	relearnAfter = 30 * time.Second
	// maxNames bounds the names whose addresses the router remembers.
	maxNames = 4096
	// maxStaticNames bounds the rules' own names looked up at start.
	maxStaticNames = 64
	// lookupWorkers bounds concurrent lookups; learnQueue the waiting ones
	// (more are dropped: the name is learned at its next question).
	lookupWorkers = 4
	learnQueue    = 256
)

// ErrExpired is returned by Run when the time limit passed.
var ErrExpired = errors.New("router mode expired")

// ErrRemoved is returned by Run when the table was removed by someone
// else (`unicorn router down`).
var ErrRemoved = errors.New("the unicorn table was removed (unicorn router down?)")

// Config configures a Router. Fields marked MANDATORY must be set; the
// others are OPTIONAL, with the default their comment gives.
type Config struct {
	// LAN is the interface the devices are on. MANDATORY.
	LAN string
	// TransparentPort and DNSPort are unicorn's transparent listener and
	// DNS ports, on the LAN interface's address or a wildcard. MANDATORY.
	TransparentPort, DNSPort uint16
	// Engine is asked which scenarios are on. MANDATORY.
	Engine *rules.Engine
	// Lookup resolves names with the upstream resolvers, never through
	// the rules (dnsblock.Server.Lookup). MANDATORY.
	Lookup func(ctx context.Context, host string) ([]netip.Addr, error)
	// TTL is how long until everything reverts unless Renew is called.
	// Zero: DefaultTTL.
	TTL time.Duration
	// NFT runs nft. Zero: nft from PATH.
	NFT NFT
	// Logger gets what the router does, with component=router. Nil:
	// slog.Default().
	Logger *slog.Logger
}

// Router installs and maintains unicorn's table. Create it with New,
// install with Up, then Run until it returns; Run removes the table.
type Router struct {
	cfg Config
	log *slog.Logger
	id  string

	mu      sync.Mutex
	meta    Meta
	up      bool
	names   map[string]*learned // lower-case name -> what it resolved to
	inSets  map[string]bool     // "set addr" already in a set
	pending map[string]bool     // names queued or being looked up
	gen     uint32              // the ruleset's generation (Params.Gen)

	unwatch func() // stops OnChange

	learnq  chan learnReq
	results chan learnResult
	changed chan struct{}
	renew   chan struct{}
}

type learned struct {
	addrs   []netip.Addr
	clients []netip.Addr // who asked (zero: the rules' own names)
	at      time.Time
}

type learnReq struct {
	client netip.Addr
	name   string
}

type learnResult struct {
	learnReq
	addrs []netip.Addr
}

// New checks cfg and returns a Router; nothing is installed yet.
func New(cfg Config) (*Router, error) {
	switch {
	case cfg.LAN == "":
		return nil, errors.New("router: no LAN interface (--lan IFACE)")
	case cfg.TransparentPort == 0 || cfg.DNSPort == 0:
		return nil, errors.New("router: the transparent and DNS ports are required")
	case cfg.Engine == nil || cfg.Lookup == nil:
		return nil, errors.New("router: Config.Engine and Config.Lookup are required")
	}
	if cfg.TTL <= 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	var id [6]byte
	rand.Read(id[:])
	r := &Router{
		cfg:     cfg,
		log:     cfg.Logger.With("component", "router"),
		id:      hex.EncodeToString(id[:]),
		names:   make(map[string]*learned),
		inSets:  make(map[string]bool),
		pending: make(map[string]bool),
		learnq:  make(chan learnReq, learnQueue),
		results: make(chan learnResult, learnQueue),
		changed: make(chan struct{}, 1),
		renew:   make(chan struct{}, 1),
	}
	// The first generation is random: conntrack entries that outlive an
	// earlier run keep that run's mark, which must not pass as decided.
	r.gen = 1 + (uint32(id[0])<<8|uint32(id[1]))%MaxGen
	r.meta = Meta{ID: r.id, PID: os.Getpid(), LAN: cfg.LAN, Expires: time.Now().Add(cfg.TTL)}
	return r, nil
}

// ID is the installation's id, recorded in the table's comment; the crash
// guard removes only a table with this id.
func (r *Router) ID() string { return r.id }

// Ruleset returns the table as Up would install it now.
func (r *Router) Ruleset() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return Define(r.params())
}

// Up installs the table and turns forwarding on, remembering the
// forwarding switches in the table's comment. It refuses when a unicorn
// table is already installed.
func (r *Router) Up() error {
	if err := r.cfg.NFT.Check(); err != nil {
		return err
	}
	switch listing, err := r.cfg.NFT.List(); {
	case errors.Is(err, ErrNoTable):
	case err != nil:
		return fmt.Errorf("router: %w", err)
	default:
		m, err := ParseMeta(listing)
		if err != nil {
			return fmt.Errorf("a table inet unicorn is already installed, not by `unicorn router up` (%v); look at it with `nft list table inet unicorn`", err)
		}
		return fmt.Errorf("router mode is already on (pid %d, LAN %s, until %s); stop it first with `unicorn router down`",
			m.PID, m.LAN, m.Expires.Local().Format(time.DateTime))
	}
	v4, err := readSysctl(ipv4Forward)
	if err != nil {
		return fmt.Errorf("router: %w", err)
	}
	v6, _ := readSysctl(ipv6Forward) // no IPv6: nothing to turn on
	r.mu.Lock()
	r.meta.IPv4Forward, r.meta.IPv6Forward = v4, v6
	script := Script(r.params())
	r.mu.Unlock()
	if err := r.cfg.NFT.Apply(script); err != nil {
		return fmt.Errorf("router: installing the table: %w", err)
	}
	r.mu.Lock()
	r.up = true
	r.mu.Unlock()
	if err := writeSysctl(ipv4Forward, "1"); err != nil {
		r.Down()
		return fmt.Errorf("router: turning on IPv4 forwarding: %w", err)
	}
	if v6 != "" {
		if err := writeSysctl(ipv6Forward, "1"); err != nil {
			r.log.Warn("cannot turn on IPv6 forwarding", "err", err)
		}
	}
	r.unwatch = r.cfg.Engine.OnChange(func() {
		select {
		case r.changed <- struct{}{}:
		default:
		}
	})
	r.log.Info("router mode on", "lan", r.cfg.LAN, "transparent_port", r.cfg.TransparentPort,
		"dns_port", r.cfg.DNSPort, "until", r.meta.Expires.Format(time.RFC3339), "table", Family+" "+Table)
	return nil
}

// Down removes the table (if this router's is installed) and restores
// forwarding. It may be called more than once.
func (r *Router) Down() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.up {
		return nil
	}
	r.up = false
	var errs []error
	if m, _, err := Installed(r.cfg.NFT); err == nil && m.ID == r.id {
		if err := r.cfg.NFT.Delete(); err != nil && !errors.Is(err, ErrNoTable) {
			errs = append(errs, err)
		}
	} else if err != nil && !errors.Is(err, ErrNoTable) {
		errs = append(errs, err)
	}
	if err := restoreForwarding(r.meta); err != nil {
		errs = append(errs, err)
	}
	r.log.Info("router mode off: table removed, forwarding restored", "ip_forward", r.meta.IPv4Forward, "ipv6_forwarding", r.meta.IPv6Forward)
	return errors.Join(errs...)
}

// Renew starts the time limit again.
func (r *Router) Renew() {
	select {
	case r.renew <- struct{}{}:
	default:
	}
}

// Learn asks the router to look name up (with Config.Lookup) and put its
// addresses into the sets of the rules that block it for client, so that
// traffic to them by address is blocked too. It never blocks: when too
// many lookups wait, the name is learned at its next question.
func (r *Router) Learn(client netip.Addr, name string) {
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	r.mu.Lock()
	if l := r.names[name]; r.pending[name] || (l != nil && time.Since(l.at) < relearnAfter && slices.Contains(l.clients, client)) {
		r.mu.Unlock()
		return
	}
	r.pending[name] = true
	r.mu.Unlock()
	select {
	case r.learnq <- learnReq{client, name}:
	default:
		r.mu.Lock()
		delete(r.pending, name)
		r.mu.Unlock()
	}
}

// Run keeps the table in sync until ctx is done, the time limit passes
// (ErrExpired) or the table is removed by someone else (ErrRemoved);
// then it removes the table (if still its own) and restores forwarding.
func (r *Router) Run(ctx context.Context) error {
	defer r.Down()
	if r.unwatch != nil {
		defer r.unwatch()
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // before wg.Wait: the workers end with ctx
	for range lookupWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.lookups(ctx)
		}()
	}
	r.learnStatic()
	ttl := time.NewTimer(r.cfg.TTL)
	defer ttl.Stop()
	watch := time.NewTicker(watchEvery)
	defer watch.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-ttl.C:
			r.log.Warn("router mode expired: removing the table and restoring forwarding (renew with `unicorn router renew`, or a longer --ttl)", "ttl", r.cfg.TTL.String())
			return fmt.Errorf("%w after %v", ErrExpired, r.cfg.TTL)
		case <-r.renew:
			ttl.Reset(r.cfg.TTL)
			r.mu.Lock()
			r.meta.Expires = time.Now().Add(r.cfg.TTL)
			r.mu.Unlock()
			r.log.Info("router mode renewed", "until", r.meta.Expires.Format(time.RFC3339))
			r.reinstall()
		case <-r.changed:
			r.reinstall()
			r.learnStatic()
		case res := <-r.results:
			r.learned(res)
		case <-watch.C:
			if m, _, err := Installed(r.cfg.NFT); errors.Is(err, ErrNoTable) || (err == nil && m.ID != r.id) {
				r.mu.Lock()
				r.up = false // not ours to remove any more
				r.mu.Unlock()
				r.log.Warn("the unicorn table was removed from outside; stopping router mode")
				return ErrRemoved
			}
		}
	}
}

// lookups resolves queued names until ctx is done.
func (r *Router) lookups(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case q := <-r.learnq:
			lctx, cancel := context.WithTimeout(ctx, lookupTimeout)
			addrs, err := r.cfg.Lookup(lctx, q.name)
			cancel()
			if err != nil {
				r.log.Debug("cannot look up a blocked name", "name", q.name, "err", err)
			}
			select {
			case r.results <- learnResult{q, addrs}:
			case <-ctx.Done():
				return
			}
		}
	}
}

// learnStatic looks up the names the blocking rules list themselves
// (hosts, and domains as names), so that their addresses are blocked
// before any device asks.
func (r *Router) learnStatic() {
	n := 0
	for _, st := range r.cfg.Engine.Scenarios() {
		if !st.On {
			continue
		}
		for _, rule := range st.Scenario.Rules {
			svc := rule.Target()
			if !rule.Action.Blocking() || svc == nil {
				continue
			}
			for _, name := range slices.Concat(svc.Hosts(), svc.Domains()) {
				if n >= maxStaticNames {
					return
				}
				r.Learn(netip.Addr{}, name)
				n++
			}
		}
	}
}

// learned records a lookup's result and adds the addresses to the sets
// of the rules that block the name.
func (r *Router) learned(res learnResult) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.pending, res.name)
	if len(res.addrs) == 0 {
		return
	}
	l := r.names[res.name]
	if l == nil {
		if len(r.names) >= maxNames {
			for k := range r.names { // forget one at random
				delete(r.names, k)
				break
			}
		}
		l = &learned{}
		r.names[res.name] = l
	}
	l.at = time.Now()
	l.addrs = res.addrs
	if !slices.Contains(l.clients, res.client) && len(l.clients) < 16 {
		l.clients = append(l.clients, res.client)
	}
	if !r.up {
		return
	}
	pos := positions(r.cfg.Engine.Scenarios())
	var add []string
	for rule, addrs := range r.attribute(map[string]*learned{res.name: l}) {
		i, ok := pos[rule]
		if !ok {
			continue
		}
		for _, a := range addrs {
			set := SetName(i, a.Is6())
			if key := set + " " + a.String(); !r.inSets[key] {
				r.inSets[key] = true
				add = append(add, fmt.Sprintf("add element %s %s %s { %s }", Family, Table, set, a))
			}
		}
	}
	if len(add) == 0 {
		return
	}
	// A new generation, in the same transaction: open flows to the
	// addresses now blocked are decided again at their next packet.
	r.gen = NextGen(r.gen)
	add = append(add, Regenerate(r.cfg.LAN, r.gen)...)
	r.log.Info("blocking the addresses of a blocked name", "name", res.name, "addrs", fmt.Sprint(res.addrs))
	if err := r.cfg.NFT.Apply(strings.Join(add, "\n") + "\n"); err != nil {
		r.log.Warn("cannot add learned addresses; reinstalling the table", "err", err)
		select { // the set may have gone with a change: Run reinstalls
		case r.changed <- struct{}{}:
		default:
		}
	}
}

// attribute maps learned names onto the blocking rules that decide them
// (for the clients that asked, and for every device), with the addresses.
func (r *Router) attribute(names map[string]*learned) map[*rules.Rule][]netip.Addr {
	out := map[*rules.Rule][]netip.Addr{}
	for name, l := range names {
		seen := map[*rules.Rule]bool{}
		for _, c := range append([]netip.Addr{{}}, l.clients...) {
			d := r.cfg.Engine.Peek(rules.Flow{Client: c, Layer: rules.LayerDNS, Host: name})
			if d.Rule == nil || !d.Action.Blocking() || seen[d.Rule] || !hasNames(d.Rule) {
				continue
			}
			seen[d.Rule] = true
			for _, a := range l.addrs {
				if !slices.Contains(out[d.Rule], a) {
					out[d.Rule] = append(out[d.Rule], a)
				}
			}
		}
	}
	return out
}

// positions maps every rule of the scenarios that are on to its position
// in the ruleset, which names its sets.
func positions(sts []rules.ScenarioState) map[*rules.Rule]int {
	pos := map[*rules.Rule]int{}
	i := 0
	for _, st := range sts {
		if !st.On {
			continue
		}
		for _, rule := range st.Scenario.Rules {
			pos[rule] = i
			i++
		}
	}
	return pos
}

// params is the ruleset as things stand. r.mu is held.
func (r *Router) params() Params {
	return Params{
		LAN: r.cfg.LAN, TransparentPort: r.cfg.TransparentPort, DNSPort: r.cfg.DNSPort,
		Scenarios: r.cfg.Engine.Scenarios(),
		Learned:   r.attribute(r.names),
		Comment:   r.meta.String(),
		Gen:       r.gen,
	}
}

// reinstall replaces the table with one generated from the rules as they
// are now, in one transaction.
func (r *Router) reinstall() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.up {
		return
	}
	r.gen = NextGen(r.gen) // open flows are decided again by the new rules
	p := r.params()
	clear(r.inSets)
	pos := positions(p.Scenarios)
	for rule, addrs := range p.Learned {
		for _, a := range addrs {
			r.inSets[SetName(pos[rule], a.Is6())+" "+a.String()] = true
		}
	}
	if err := r.cfg.NFT.Apply(Script(p)); err != nil {
		r.log.Error("cannot update the firewall; the previous rules stay in force", "err", err)
		return
	}
	r.log.Info("firewall updated from the rules", "scenarios", onNames(p.Scenarios))
}

func onNames(sts []rules.ScenarioState) []string {
	var out []string
	for _, st := range sts {
		if st.On {
			out = append(out, st.Scenario.Name)
		}
	}
	return out
}
