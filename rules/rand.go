package rules

import (
	"hash/fnv"
	"strconv"
	"sync/atomic"
)

// Every random outcome of the engine (a probability: draw, a delay's
// jitter) is a pure function of the engine's seed, the rule's identity and
// how many draws that rule made before, so that the same seed and the same
// sequence of flows give the same outcomes, whatever other rules see, and
// no draw takes a lock.

// splitmix64 is the finaliser of Vigna's SplitMix64: a bijective mix whose
// outputs pass BigCrush for consecutive inputs.
func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// draw is the n-th random number of the stream key under seed.
func draw(seed, key, n uint64) uint64 {
	return splitmix64(splitmix64(seed^key) + n*0x9e3779b97f4a7c15)
}

// ruleKey identifies a rule across loads of the same files: its scenario's
// name and its index there. stream tells a rule's streams apart.
func ruleKey(scenario string, index int, stream string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(scenario))
	h.Write([]byte{0})
	h.Write(strconv.AppendInt(nil, int64(index), 10))
	h.Write([]byte{0})
	h.Write([]byte(stream))
	return h.Sum64()
}

// chance is a probability as a threshold on a uniform 64-bit draw; the
// zero value never acts, alwaysChance always does.
type chance uint64

const alwaysChance = chance(1<<64 - 1)

func newChance(p float64) chance {
	if p >= 1 {
		return alwaysChance
	}
	return chance(p * (1 << 64))
}

func (c chance) hit(u uint64) bool { return c == alwaysChance || u < uint64(c) }

// stream is a rule's own sequence of draws under the engine's seed: the
// source of a delay's jitter. It is safe for concurrent use.
type stream struct {
	seed *atomic.Uint64 // the engine's
	key  uint64
	n    atomic.Uint64
}

// next returns the stream's next draw.
func (s *stream) next() uint64 { return draw(s.seed.Load(), s.key, s.n.Add(1)) }
