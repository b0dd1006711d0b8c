package fault

import (
	"context"
	"sync/atomic"

	"github.com/chaos-unicorn/unicorn/rules"
)

// DelayBytes holds bytes back before they pass: the first chunk of each
// direction asked (on: first_byte, a late first byte) or every chunk (on:
// chunk). Each wait is Latency plus a draw of Jitter (rules.Params.Delay).
// A delay on connect is the front end's, before it dials.
type DelayBytes struct {
	Params *rules.Params
	// started has a bit per direction whose first chunk has passed.
	started atomic.Uint32
}

func init() {
	register("delay", func(p *rules.Params, _ Env) Fault { return &DelayBytes{Params: p} })
}

// Limit lets any read through.
func (f *DelayBytes) Limit(_ context.Context, _ rules.Direction, n int) (int, error) {
	return n, nil
}

// Pass waits before a chunk in a delayed direction.
func (f *DelayBytes) Pass(ctx context.Context, dir rules.Direction, _ int) error {
	if f.Params.Direction&dir == 0 {
		return nil
	}
	if f.Params.DelayOn == rules.DelayOnFirstByte {
		for {
			old := f.started.Load()
			if old&uint32(dir) != 0 {
				return nil
			}
			if f.started.CompareAndSwap(old, old|uint32(dir)) {
				break
			}
		}
	}
	return sleep(ctx, f.Params.Delay())
}

var _ Fault = (*DelayBytes)(nil)
