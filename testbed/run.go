package testbed

import (
	"context"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// Result is what a finished unicorn command left behind.
type Result struct {
	Stdout, Stderr string
	// Code is the exit code; -1 if the command was killed.
	Code int
	// Elapsed is the wall time from start to exit.
	Elapsed time.Duration
}

// Run runs the unicorn binary with args to completion, at most RunTimeout
// (then it is killed by its own pid and tb fails), and returns its output
// and exit code. A non-zero exit is not a failure: tests assert on it.
func Run(tb testing.TB, args ...string) Result {
	tb.Helper()
	return runArgv(tb, append([]string{Binary(tb)}, args...), "unicorn "+strings.Join(args, " "))
}

// runArgv runs argv to completion, at most RunTimeout (then it is killed
// by its own pid and tb fails), and returns its output and exit code;
// what names the command in failures.
func runArgv(tb testing.TB, argv []string, what string) Result {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), RunTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = cleanEnv()
	cmd.WaitDelay = pipeDelay
	stdout, stderr := newLines(), newLines()
	cmd.Stdout, cmd.Stderr = stdout, stderr
	start := time.Now()
	err := cmd.Run()
	r := Result{Stdout: stdout.String(), Stderr: stderr.String(), Elapsed: time.Since(start)}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.Code = ee.ExitCode()
	default:
		tb.Fatalf("testbed: %s: %v", what, err)
	}
	if ctx.Err() != nil {
		tb.Fatalf("testbed: %s did not finish within %v\nstdout:\n%s\nstderr:\n%s", what, RunTimeout, r.Stdout, r.Stderr)
	}
	return r
}
