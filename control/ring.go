package control

import "sync"

// Ring keeps the most recent events. It is safe for concurrent use; the
// hub is its only writer.
type Ring struct {
	mu   sync.Mutex
	buf  []Event
	next int // index of the slot the next event goes into
	full bool
}

// NewRing returns a ring that keeps n events.
func NewRing(n int) *Ring { return &Ring{buf: make([]Event, n)} }

func (r *Ring) add(e Event) {
	r.mu.Lock()
	r.buf[r.next] = e
	r.next++
	if r.next == len(r.buf) {
		r.next, r.full = 0, true
	}
	r.mu.Unlock()
}

// each calls fn with the events from oldest to newest, under the lock.
func (r *Ring) each(fn func(*Event)) {
	if r.full {
		for i := r.next; i < len(r.buf); i++ {
			fn(&r.buf[i])
		}
	}
	for i := 0; i < r.next; i++ {
		fn(&r.buf[i])
	}
}

// Filter selects events; the zero value selects all.
type Filter struct {
	Device  string // only this device's events
	Service string // only events of this service, or of this scenario
	Blocked bool   // only events that stopped or answered in a flow's place
}

func (f Filter) match(e *Event) bool {
	if f.Device != "" && e.Device != f.Device {
		return false
	}
	if f.Service != "" && e.Service != f.Service && e.Scenario != f.Service {
		return false
	}
	return !f.Blocked || e.Blocked()
}

// Recent returns up to limit of the newest events that f selects, oldest
// first. limit <= 0 means all the ring holds.
func (r *Ring) Recent(f Filter, limit int) []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Event
	r.each(func(e *Event) {
		if f.match(e) {
			out = append(out, *e)
		}
	})
	if limit > 0 && len(out) > limit {
		out = out[len(out)-limit:]
	}
	return out
}

// After returns the events with Seq greater than seq, oldest first.
func (r *Ring) After(seq uint64) []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Event
	r.each(func(e *Event) {
		if e.Seq > seq {
			out = append(out, *e)
		}
	})
	return out
}
