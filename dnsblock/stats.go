package dnsblock

import (
	"sync/atomic"
	"time"
)

// LatencyBuckets are the upper bounds of the upstream latency histogram.
var LatencyBuckets = []time.Duration{
	time.Millisecond, 2 * time.Millisecond, 5 * time.Millisecond, 10 * time.Millisecond,
	25 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond, 250 * time.Millisecond,
	500 * time.Millisecond, time.Second, 2500 * time.Millisecond,
}

// stats are the server's counters: atomic, updated on the query path
// without locks or allocation.
type stats struct {
	queries   atomic.Uint64
	cacheHits atomic.Uint64
	upstream  atomic.Uint64 // upstream exchanges (a question, failover included)
	upErrors  atomic.Uint64
	latSum    atomic.Int64                          // nanoseconds
	latCounts [len(latencyBounds) + 1]atomic.Uint64 // by bucket, the last is +Inf
}

// latencyBounds is LatencyBuckets as an array, so that stats has a fixed size.
var latencyBounds = [11]time.Duration{}

func init() { copy(latencyBounds[:], LatencyBuckets) }

func (s *stats) upstreamDone(d time.Duration, err error) {
	s.upstream.Add(1)
	if err != nil {
		s.upErrors.Add(1)
	}
	s.latSum.Add(int64(d))
	i := 0
	for i < len(latencyBounds) && d > latencyBounds[i] {
		i++
	}
	s.latCounts[i].Add(1)
}

// Stats is a snapshot of a server's counters since it started.
type Stats struct {
	// Queries counts the questions answered or forwarded (refused and
	// malformed queries excluded).
	Queries uint64
	// CacheHits counts allowed questions answered from the cache.
	CacheHits uint64
	// Upstream counts exchanges with the upstreams (cache misses), and
	// UpstreamErrors those that failed.
	Upstream, UpstreamErrors uint64
	// UpstreamLatency counts the exchanges by duration: Buckets[i] is the
	// number that took at most LatencyBuckets[i] (not cumulative), and the
	// last element those that took longer than every bound.
	UpstreamLatency []uint64
	// UpstreamTime is the sum of the exchanges' durations.
	UpstreamTime time.Duration
}

// Stats returns the server's counters.
func (s *Server) Stats() Stats {
	st := Stats{
		Queries:         s.stats.queries.Load(),
		CacheHits:       s.stats.cacheHits.Load(),
		Upstream:        s.stats.upstream.Load(),
		UpstreamErrors:  s.stats.upErrors.Load(),
		UpstreamTime:    time.Duration(s.stats.latSum.Load()),
		UpstreamLatency: make([]uint64, len(s.stats.latCounts)),
	}
	for i := range s.stats.latCounts {
		st.UpstreamLatency[i] = s.stats.latCounts[i].Load()
	}
	return st
}
