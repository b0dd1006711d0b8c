package fault

import (
	"context"
	"sync"
	"time"

	"github.com/chaos-unicorn/unicorn/rules"
)

// ThrottleBandwidth limits each direction asked to Rate bytes per second.
// Each direction keeps a virtual clock: a chunk of n bytes moves it on by
// n/Rate, and the chunk waits on a timer until the clock is due, so a
// throttled connection costs a timer per chunk and no spinning. Reads are
// cut to about a twentieth of a second's worth, so bytes flow evenly.
type ThrottleBandwidth struct {
	Params *rules.Params

	mu   sync.Mutex
	next [4]time.Time // per direction: when the bytes passed so far are due
}

func init() {
	register("throttle", func(p *rules.Params, _ Env) Fault { return &ThrottleBandwidth{Params: p} })
}

// maxLag bounds how far a direction's clock may fall behind now.
const maxLag = 100 * time.Millisecond

// chunk is the largest read a throttled direction makes.
func (f *ThrottleBandwidth) chunk() int {
	return int(max(min(f.Params.Rate/20, 32<<10), 1))
}

// Limit keeps reads in a throttled direction small.
func (f *ThrottleBandwidth) Limit(_ context.Context, dir rules.Direction, n int) (int, error) {
	if f.Params.Direction&dir == 0 || f.Params.Rate <= 0 {
		return n, nil
	}
	return min(n, f.chunk()), nil
}

// Pass waits until the rate allows n more bytes.
func (f *ThrottleBandwidth) Pass(ctx context.Context, dir rules.Direction, n int) error {
	if f.Params.Direction&dir == 0 || f.Params.Rate <= 0 {
		return nil
	}
	now := time.Now()
	f.mu.Lock()
	// The clock may lag behind now by maxLag, so that timers firing late
	// do not lower the rate; an idle direction saves up no more than that.
	due := f.next[dir]
	if floor := now.Add(-maxLag); due.IsZero() {
		due = now // the first bytes: nothing saved up
	} else if due.Before(floor) {
		due = floor
	}
	due = due.Add(time.Duration(int64(n) * int64(time.Second) / f.Params.Rate))
	f.next[dir] = due
	f.mu.Unlock()
	return sleep(ctx, due.Sub(now))
}

var _ Fault = (*ThrottleBandwidth)(nil)
