package control

import "github.com/chaos-unicorn/unicorn/rules"

// Attach makes h the engine's observer: every decision that is not a plain
// allow reaches the hub, without blocking Decide.
func (h *Hub) Attach(e *rules.Engine) {
	e.SetObserver(func(ev rules.Event) { h.Observe(ev.Time, &ev.Flow, ev.Decision) })
}
