package dnsblock

import (
	"sync"
	"sync/atomic"
)

// clock is a map bounded to max entries with CLOCK (second chance)
// eviction: an entry read or rewritten since the hand last passed it
// survives one more turn. It is safe for concurrent use; readers share a
// read lock, so hits on the hot path never wait for each other.
type clock[K, V comparable] struct {
	mu    sync.RWMutex
	idx   map[K]int // key -> position in slots
	slots []clockSlot[K, V]
	hand  int // next slot the eviction hand looks at
	max   int
}

type clockSlot[K, V comparable] struct {
	key K
	val V
	ref uint32 // 1 if used since the hand last passed; accessed atomically
}

// newClock returns a clock holding at most max (>= 1) entries. Slots grow
// on demand, so a large bound costs nothing until it is used.
func newClock[K, V comparable](max int) *clock[K, V] {
	return &clock[K, V]{idx: make(map[K]int), max: max}
}

// get returns the value stored for k.
func (c *clock[K, V]) get(k K) (v V, ok bool) {
	c.mu.RLock()
	i, ok := c.idx[k]
	if ok {
		s := &c.slots[i]
		v = s.val
		// Load first: a plain store on every hit would bounce the cache
		// line between cores.
		if atomic.LoadUint32(&s.ref) == 0 {
			atomic.StoreUint32(&s.ref, 1)
		}
	}
	c.mu.RUnlock()
	return v, ok
}

// put stores v for k, evicting an entry when the clock is full.
func (c *clock[K, V]) put(k K, v V) {
	// Refreshing an unchanged entry is the common case (the same address
	// seen again); it needs only the read lock.
	c.mu.RLock()
	if i, ok := c.idx[k]; ok && c.slots[i].val == v {
		atomic.StoreUint32(&c.slots[i].ref, 1)
		c.mu.RUnlock()
		return
	}
	c.mu.RUnlock()

	c.mu.Lock()
	defer c.mu.Unlock()
	if i, ok := c.idx[k]; ok {
		c.slots[i].val = v
		atomic.StoreUint32(&c.slots[i].ref, 1)
		return
	}
	if len(c.slots) < c.max {
		c.slots = append(c.slots, clockSlot[K, V]{key: k, val: v})
		c.idx[k] = len(c.slots) - 1
		return
	}
	i := c.victim()
	delete(c.idx, c.slots[i].key)
	c.slots[i] = clockSlot[K, V]{key: k, val: v}
	c.idx[k] = i
}

// victim returns the slot to reuse. Caller holds the write lock. Two turns
// of the hand always find one: the first turn clears every ref bit.
func (c *clock[K, V]) victim() int {
	n := len(c.slots)
	for range 2 * n {
		i := c.hand
		c.hand = (c.hand + 1) % n
		if atomic.LoadUint32(&c.slots[i].ref) == 0 {
			return i
		}
		atomic.StoreUint32(&c.slots[i].ref, 0)
	}
	return c.hand // unreachable: readers only set bits under the read lock
}

// len returns the number of entries.
func (c *clock[K, V]) len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.idx)
}
