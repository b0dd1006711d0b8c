package fault

import (
	"sync"

	"github.com/chaos-unicorn/unicorn/rules"
)

// budget counts the bytes a fault lets through in its directions, for the
// faults that act after N bytes (cut, stall, slow_close). Limit reserves
// the bytes a read may take and Pass settles the reservation, so that two
// directions counted together never overshoot.
type budget struct {
	dirs rules.Direction
	max  int64

	mu      sync.Mutex
	used    int64
	pending [4]int64 // reserved per direction, indexed by rules.Direction
}

func newBudget(dirs rules.Direction, max int64) *budget {
	return &budget{dirs: dirs, max: max}
}

// take reserves up to n bytes in dir. It returns n for a direction the
// budget does not count, and 0 when the budget is spent.
func (b *budget) take(dir rules.Direction, n int) int {
	if b.dirs&dir == 0 {
		return n
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	left := b.max - b.used
	if left <= 0 {
		return 0
	}
	k := int(min(int64(n), left))
	b.used += int64(k)
	b.pending[dir] = int64(k)
	return k
}

// settle records that n of the bytes reserved in dir passed.
func (b *budget) settle(dir rules.Direction, n int) {
	if b.dirs&dir == 0 {
		return
	}
	b.mu.Lock()
	b.used -= b.pending[dir] - int64(n)
	b.pending[dir] = 0
	b.mu.Unlock()
}
