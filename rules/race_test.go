//go:build race

package rules

// raceEnabled: under the race detector sync.Pool drops items at random, so
// regexp (which pools its matchers) allocates now and then.
const raceEnabled = true
