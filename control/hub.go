package control

import (
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chaos-unicorn/unicorn/rules"
)

// HubConfig configures a Hub. Every field is OPTIONAL.
type HubConfig struct {
	// Queue is how many decisions may wait for the hub's goroutine; when
	// it is full, Observe drops the decision and counts it. Zero means
	// DefaultQueue.
	Queue int
	// Ring is how many recent events the hub keeps for the dashboard and
	// the device page. Zero means DefaultRing.
	Ring int
	// Log, if set, receives every event as one JSON line.
	Log *EventLog
	// Logger receives event log write errors. Nil means slog.Default().
	Logger *slog.Logger
}

// Defaults for zero HubConfig fields.
const (
	DefaultQueue = 4096
	DefaultRing  = 1000
)

// Hub carries decisions from the engine (Observe, called inside Decide)
// to the ring, the subscribers (SSE streams) and the event log. Observe
// never blocks and never allocates: it copies the decision into a queue
// slot and returns, dropping it when the queue is full. One goroutine of
// the hub's own does the rest.
type Hub struct {
	in      chan rawEvent
	dropped atomic.Uint64
	// decisions counts non-allow decisions by layer and action, exactly
	// (before any drop), for the metrics.
	decisions [numLayers][numActionSlots]atomic.Uint64

	ring *Ring
	elog *EventLog
	log  *slog.Logger

	mu      sync.Mutex
	subs    map[*Subscription]struct{}
	devices map[string]*DeviceStats
	seq     uint64
	logErr  bool // an event log write failed and was logged; reset on success

	done chan struct{}
	quit chan struct{}
	once sync.Once
}

// Bounds of Hub.decisions: rules.Layer and rules.Action values index it.
const (
	numLayers      = 8
	numActionSlots = 16
)

// maxHost is the longest name the hub keeps; DNS names are at most 253.
const maxHost = 255

// rawEvent is a decision as Observe copies it: no pointer into the
// caller's buffers (a DNS question's name is a view of a packet buffer).
type rawEvent struct {
	time     time.Time
	client   netip.Addr
	addr     netip.Addr
	port     uint16
	layer    rules.Layer
	via      string // rules.Flow.Via
	hostLen  uint8
	host     [maxHost]byte
	method   string
	path     string
	decision rules.Decision
	flush    chan struct{} // non-nil: not an event, a Flush marker
}

// DeviceStats counts the events of one device.
type DeviceStats struct {
	Device  string    `json:"device"`
	Events  uint64    `json:"events"`
	Blocked uint64    `json:"blocked"`
	Last    time.Time `json:"last"`
	// Services counts events by the service of the deciding rule ("" for
	// rules with their own match fields).
	Services map[string]uint64 `json:"services"`
}

// NewHub returns a running hub; Close stops it.
func NewHub(cfg HubConfig) *Hub {
	if cfg.Queue <= 0 {
		cfg.Queue = DefaultQueue
	}
	if cfg.Ring <= 0 {
		cfg.Ring = DefaultRing
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	h := &Hub{
		in:      make(chan rawEvent, cfg.Queue),
		ring:    NewRing(cfg.Ring),
		elog:    cfg.Log,
		log:     cfg.Logger.With(slog.String("component", "events")),
		subs:    map[*Subscription]struct{}{},
		devices: map[string]*DeviceStats{},
		done:    make(chan struct{}),
		quit:    make(chan struct{}),
	}
	go h.run()
	return h
}

// Observe takes one decision the engine made at time at. It must be cheap:
// it is called inside Decide. Plain allows (no rule) are ignored.
func (h *Hub) Observe(at time.Time, f *rules.Flow, d rules.Decision) {
	if d.Action == rules.ActionAllow {
		return
	}
	if int(f.Layer) < numLayers && int(d.Action) < numActionSlots {
		h.decisions[f.Layer][d.Action].Add(1)
	}
	select {
	case <-h.quit:
		return
	default:
	}
	// Build the slot in place in the channel send: a rawEvent is a few
	// hundred bytes, copied once.
	var r rawEvent
	r.time, r.client, r.addr, r.port, r.layer = at, f.Client, f.Addr, f.Port, f.Layer
	r.hostLen = uint8(copy(r.host[:], f.Host))
	r.method, r.path, r.decision, r.via = f.Method, f.Path, d, f.Via
	select {
	case h.in <- r:
	default:
		h.dropped.Add(1)
	}
}

// Dropped returns how many decisions Observe dropped because the hub was
// behind.
func (h *Hub) Dropped() uint64 { return h.dropped.Load() }

// Decisions returns how many non-allow decisions were made at layer l with
// action a, dropped ones included.
func (h *Hub) Decisions(l rules.Layer, a rules.Action) uint64 {
	if int(l) >= numLayers || int(a) >= numActionSlots {
		return 0
	}
	return h.decisions[l][a].Load()
}

// Ring returns the hub's ring of recent events.
func (h *Hub) Ring() *Ring { return h.ring }

// Flush waits until every decision observed before the call has reached
// the ring, the subscribers and the log, or until the hub stops.
func (h *Hub) Flush() {
	c := make(chan struct{})
	select {
	case h.in <- rawEvent{flush: c}:
	case <-h.done:
		return
	}
	select {
	case <-c:
	case <-h.done:
	}
}

// Devices returns the event counts of every device seen, by device address.
func (h *Hub) Devices() []DeviceStats {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]DeviceStats, 0, len(h.devices))
	for _, d := range h.devices {
		c := *d
		c.Services = make(map[string]uint64, len(d.Services))
		for k, v := range d.Services {
			c.Services[k] = v
		}
		out = append(out, c)
	}
	return out
}

// Close stops the hub after handling what is queued, ends every
// subscription and closes the event log.
func (h *Hub) Close() error {
	h.once.Do(func() { close(h.quit) })
	<-h.done
	if h.elog != nil {
		return h.elog.Close()
	}
	return nil
}

func (h *Hub) run() {
	defer close(h.done)
	defer func() {
		h.mu.Lock()
		for s := range h.subs {
			delete(h.subs, s)
			close(s.c)
		}
		h.mu.Unlock()
	}()
	for {
		select {
		case r := <-h.in:
			h.handle(&r)
		case <-h.quit:
			for {
				select {
				case r := <-h.in:
					h.handle(&r)
				default:
					return
				}
			}
		}
	}
}

func (h *Hub) handle(r *rawEvent) {
	if r.flush != nil {
		close(r.flush)
		return
	}
	d := r.decision
	ev := Event{
		Time:   r.time,
		Layer:  r.layer.String(),
		Target: target(r.layer, string(r.host[:r.hostLen]), r.addr, r.port),
		Method: r.method, Path: r.path,
		Action:  d.Action.String(),
		Outcome: OutcomeVia(r.via, r.layer, d.Action, d.Params()),
	}
	if r.via != "" {
		ev.Layer = r.via // a SOCKS CONNECT is asked as a CONNECT; say what it was
	}
	if r.client.IsValid() {
		ev.Device = r.client.Unmap().String() // ::ffff:192.0.2.7 is 192.0.2.7
	}
	if d.Rule != nil {
		ev.Scenario, ev.Service = d.Rule.Scenario, d.Rule.Service
		ev.Rule, ev.RuleIndex = d.Rule.Pos.String(), d.Rule.Index
	}
	h.mu.Lock()
	h.seq++
	ev.Seq = h.seq
	if ev.Device != "" {
		ds := h.devices[ev.Device]
		if ds == nil {
			ds = &DeviceStats{Device: ev.Device, Services: map[string]uint64{}}
			h.devices[ev.Device] = ds
		}
		ds.Events++
		if ev.Blocked() {
			ds.Blocked++
		}
		ds.Last = ev.Time
		ds.Services[ev.Service]++
	}
	h.ring.add(ev)
	for s := range h.subs {
		select {
		case s.c <- ev:
		default:
			s.dropped.Add(1)
		}
	}
	h.mu.Unlock()
	if h.elog != nil {
		if err := h.elog.Write(&ev); err != nil {
			if !h.logErr {
				h.log.Error("event log write failed; events still reach the dashboard", slog.Any("err", err))
				h.logErr = true
			}
		} else {
			h.logErr = false
		}
	}
}

// Subscription receives the events the hub handles after Subscribe. A
// subscriber that falls behind by more than its buffer loses events, which
// Dropped counts; the hub never waits for it.
type Subscription struct {
	c       chan Event
	h       *Hub
	dropped atomic.Uint64
}

// Subscribe returns a subscription with room for buf events. Close it when
// done. past receives the ring's events with Seq greater than after (0:
// none), taken atomically with the subscription, so no event is missed or
// seen twice between the two.
func (h *Hub) Subscribe(buf int, after uint64) (s *Subscription, past []Event) {
	s = &Subscription{c: make(chan Event, buf), h: h}
	h.mu.Lock()
	defer h.mu.Unlock()
	select {
	case <-h.done:
		close(s.c)
		return s, nil
	default:
	}
	if after > 0 {
		past = h.ring.After(after)
	}
	h.subs[s] = struct{}{}
	return s, past
}

// C delivers the events; it is closed when the hub stops or Close is called.
func (s *Subscription) C() <-chan Event { return s.c }

// Dropped returns how many events this subscriber lost by falling behind.
func (s *Subscription) Dropped() uint64 { return s.dropped.Load() }

// Close ends the subscription.
func (s *Subscription) Close() {
	s.h.mu.Lock()
	defer s.h.mu.Unlock()
	if _, ok := s.h.subs[s]; ok {
		delete(s.h.subs, s)
		close(s.c)
	}
}
