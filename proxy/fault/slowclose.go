package fault

import (
	"context"

	"github.com/chaos-unicorn/unicorn/rules"
)

// SlowClose holds a close back: when a direction asked ends, the end
// reaches the other side Latency later. With AfterBytes, the direction
// also stops forwarding after that many bytes and is closed Latency
// later, as a peer that hangs before it hangs up.
type SlowClose struct {
	Params *rules.Params
	bytes  *budget // nil without after_bytes
}

func init() {
	register("slow_close", func(p *rules.Params, _ Env) Fault {
		f := &SlowClose{Params: p}
		if p.AfterBytes > 0 {
			f.bytes = newBudget(p.Direction, p.AfterBytes)
		}
		return f
	})
}

// Limit lets a read take what is left of the budget, then waits Latency
// and closes the connection.
func (f *SlowClose) Limit(ctx context.Context, dir rules.Direction, n int) (int, error) {
	if f.bytes == nil {
		return n, nil
	}
	if k := f.bytes.take(dir, n); k > 0 {
		return k, nil
	}
	if err := sleep(ctx, f.Params.Delay()); err != nil {
		return 0, err
	}
	return 0, ErrClose
}

// Pass counts the bytes.
func (f *SlowClose) Pass(_ context.Context, dir rules.Direction, n int) error {
	if f.bytes != nil {
		f.bytes.settle(dir, n)
	}
	return nil
}

// End waits Latency before the end of a direction asked passes on.
func (f *SlowClose) End(ctx context.Context, dir rules.Direction) error {
	if f.Params.Direction&dir == 0 {
		return nil
	}
	return sleep(ctx, f.Params.Delay())
}

var (
	_ Fault = (*SlowClose)(nil)
	_ Ender = (*SlowClose)(nil)
)
