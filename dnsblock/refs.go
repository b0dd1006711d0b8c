package dnsblock

import (
	"hash/maphash"
	"sync/atomic"

	"github.com/chaos-unicorn/unicorn/rules"
)

// refSlots is how many rule references refCache keeps.
const refSlots = 256

// refCache keeps Rule.Ref() strings for recently deciding rules, so a
// blocked answer's Extended DNS Error text costs no formatting per query.
// It is direct-mapped and bounded: rules from replaced rule sets simply
// get overwritten. Rules are immutable once loaded, so a pointer is a key.
type refCache struct {
	seed  maphash.Seed
	slots [refSlots]atomic.Pointer[refEntry]
}

type refEntry struct {
	rule *rules.Rule
	ref  string
}

func newRefCache() *refCache { return &refCache{seed: maphash.MakeSeed()} }

// get returns r.Ref(), or "" for a nil rule.
func (c *refCache) get(r *rules.Rule) string {
	if r == nil {
		return ""
	}
	slot := &c.slots[maphash.Comparable(c.seed, r)%refSlots]
	if e := slot.Load(); e != nil && e.rule == r {
		return e.ref
	}
	e := &refEntry{rule: r, ref: r.Ref()}
	slot.Store(e)
	return e.ref
}
