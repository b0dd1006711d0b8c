package fault

import (
	"context"
	"time"

	"github.com/chaos-unicorn/unicorn/rules"
)

// CutConnection ends a connection once AfterBytes have passed in the
// directions asked (the bytes before the cut are delivered), or After it
// started, whichever comes first: with a FIN (mode: close) or a RST (mode:
// rst) to both sides.
type CutConnection struct {
	Params *rules.Params
	bytes  *budget // nil without after_bytes
}

func init() {
	register("cut", func(p *rules.Params, _ Env) Fault {
		f := &CutConnection{Params: p}
		if p.AfterBytes > 0 {
			f.bytes = newBudget(p.Direction, p.AfterBytes)
		}
		return f
	})
}

func (f *CutConnection) err() error {
	if f.Params.Close == rules.CloseRST {
		return ErrReset
	}
	return ErrClose
}

// Limit lets a read take what is left of the byte budget; once it is
// spent, the connection ends.
func (f *CutConnection) Limit(_ context.Context, dir rules.Direction, n int) (int, error) {
	if f.bytes == nil {
		return n, nil
	}
	if k := f.bytes.take(dir, n); k > 0 {
		return k, nil
	}
	return 0, f.err()
}

// Pass counts the bytes.
func (f *CutConnection) Pass(_ context.Context, dir rules.Direction, n int) error {
	if f.bytes != nil {
		f.bytes.settle(dir, n)
	}
	return nil
}

// Start ends the connection After it started, if the rule says so.
func (f *CutConnection) Start(ctx context.Context, abort func(error)) {
	if f.Params.After <= 0 {
		return
	}
	t := time.AfterFunc(f.Params.After, func() { abort(f.err()) })
	context.AfterFunc(ctx, func() { t.Stop() })
}

var (
	_ Fault   = (*CutConnection)(nil)
	_ Starter = (*CutConnection)(nil)
)
