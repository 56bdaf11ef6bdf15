//go:build race

package memory_test

// raceEnabled shortens the longest loops under the race detector, which
// slows them tenfold.
const raceEnabled = true
