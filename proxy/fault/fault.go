// Package fault owns the byte faults unicorn applies to a relayed
// connection: delay (on the first byte or every chunk), throttle, cut,
// slow_close and stall. Each fault lives in a file of its own, is
// registered by its action's name, takes its parameters already parsed
// and validated by rules/, and waits only in ways its context can cancel.
//
// Every front end that relays bytes (CONNECT, SOCKS, the transparent
// listener) turns a rules.Decision into faults through one mapping, For,
// and wraps the upstream side of the connection with Wrap. A connection
// that no fault applies to is never wrapped, so the relay stays a plain
// copy between two *net.TCPConn (splice on Linux).
package fault

import (
	"context"
	"errors"
	"time"

	"github.com/chaos-unicorn/unicorn/rules"
)

// Fault acts on the bytes of one relayed connection. For makes a new one
// per connection; both directions use it at once, so its methods must be
// safe for concurrent use by two goroutines (one per direction).
type Fault interface {
	// Limit is called before a read of up to n bytes (n >= 1) going in
	// direction dir. It returns how many bytes the read may take (1..n),
	// or an error that ends the connection: ErrClose, ErrReset, or the
	// context's error. It may wait (a stall holds here).
	Limit(ctx context.Context, dir rules.Direction, n int) (int, error)
	// Pass is called with n >= 1 bytes just read in direction dir, before
	// they are written on. It waits as long as the fault says (a delay,
	// a throttle) and returns early with the context's error.
	Pass(ctx context.Context, dir rules.Direction, n int) error
}

// Starter is a Fault that acts on the whole connection from its start (a
// cut after a duration). Start is called once per connection; abort ends
// the connection with err (ErrClose or ErrReset). Start must not block;
// whatever it starts must end when ctx is done.
type Starter interface {
	Start(ctx context.Context, abort func(err error))
}

// Ender is a Fault that acts when a direction ends (slow_close). End is
// called when the source of direction dir has ended cleanly, before the
// end is passed on; it may wait, and returns early when ctx is done.
type Ender interface {
	End(ctx context.Context, dir rules.Direction) error
}

// The errors a Fault ends a connection with. The relay closes both sides:
// with FIN for ErrClose, with RST for ErrReset.
var (
	ErrClose = errors.New("fault: connection closed by a rule")
	ErrReset = errors.New("fault: connection reset by a rule")
)

// Env is what faults may use of the front end applying them. The zero
// value is usable: a stall then holds for DefaultHold.
type Env struct {
	// Hold bounds how long a stall keeps a connection open in silence
	// before closing it (the proxy's blackhole timeout). OPTIONAL; zero
	// means DefaultHold.
	Hold time.Duration
}

// DefaultHold is the hold of a stall when Env.Hold is zero.
const DefaultHold = 60 * time.Second

func (e Env) hold() time.Duration {
	if e.Hold > 0 {
		return e.Hold
	}
	return DefaultHold
}

// maker builds the fault of one connection from a rule's parameters.
type maker func(p *rules.Params, env Env) Fault

// registry maps an action's name to its fault: the one list of faults.
var registry = map[string]maker{}

// register adds a fault under the name of its action; each fault file
// calls it from init.
func register(name string, m maker) {
	if _, dup := registry[name]; dup {
		panic("fault: " + name + " registered twice")
	}
	if _, ok := rules.ParseAction(name); !ok {
		panic("fault: " + name + " is not an action")
	}
	registry[name] = m
}

// Names lists the registered faults, for help texts.
func Names() []string {
	var names []string
	for i := rules.Action(0); i.String() != "unknown"; i++ {
		if _, ok := registry[i.String()]; ok {
			names = append(names, i.String())
		}
	}
	return names
}

// For returns the fault that decision d applies to the bytes of one new
// connection, or nil when it applies none: every action that is not a
// byte fault, and a delay on connect, which the front end waits out
// before it dials.
func For(d rules.Decision, env Env) Fault {
	p := d.Params()
	if p == nil || !d.Action.ByteFault() {
		return nil
	}
	if d.Action == rules.ActionDelay && p.DelayOn == rules.DelayOnConnect {
		return nil
	}
	m := registry[d.Action.String()]
	if m == nil {
		return nil
	}
	return m(p, env)
}

// sleep waits for d, or until ctx is done, whichever comes first.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
