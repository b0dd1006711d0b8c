//go:build race

package testbed

// raceEnabled builds the binary with the race detector when the tests run
// with it, so a data race in unicorn fails the test that stops it.
const raceEnabled = true
