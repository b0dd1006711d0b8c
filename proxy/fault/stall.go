package fault

import (
	"context"

	"github.com/chaos-unicorn/unicorn/rules"
)

// StallAfterBytes stops forwarding once AfterBytes have passed in the
// directions asked (at once for zero) and keeps the connection open in
// silence: the device sees a peer that stopped talking. The hold ends
// when the connection does, or after Env.Hold, when both sides are closed.
type StallAfterBytes struct {
	Params *rules.Params
	bytes  *budget
	env    Env
}

func init() {
	register("stall", func(p *rules.Params, env Env) Fault {
		return &StallAfterBytes{Params: p, bytes: newBudget(p.Direction, p.AfterBytes), env: env}
	})
}

// Limit lets a read take what is left of the budget, then holds.
func (f *StallAfterBytes) Limit(ctx context.Context, dir rules.Direction, n int) (int, error) {
	if k := f.bytes.take(dir, n); k > 0 {
		return k, nil
	}
	if err := sleep(ctx, f.env.hold()); err != nil {
		return 0, err
	}
	return 0, ErrClose
}

// Pass counts the bytes.
func (f *StallAfterBytes) Pass(_ context.Context, dir rules.Direction, n int) error {
	f.bytes.settle(dir, n)
	return nil
}

var _ Fault = (*StallAfterBytes)(nil)
