package testbed

import (
	"errors"
	"fmt"
	"sync"
	"testing"
)

// session lets the test helpers of this package (NewTopology and the
// servers it starts, which report through a testing.TB) run outside a
// test, for `unicorn testbed up --netns`: Cleanup collects what to undo,
// Errorf collects errors, and Fatalf, Fatal and Skipf abort by panicking
// with a sessionFatal that runSession turns back into an error. Only the
// methods below are used by the helpers it runs; the embedded TB is nil,
// so any other method panics (a bug here, never a silent no-op).
type session struct {
	testing.TB

	mu       sync.Mutex
	cleanups []func()
	errs     []error
}

// sessionFatal is the panic value of a session's Fatalf.
type sessionFatal struct{ err error }

var _ testing.TB = (*session)(nil)

func (s *session) Helper()      {}
func (s *session) Name() string { return "unicorn testbed" }

func (s *session) Cleanup(fn func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cleanups = append(s.cleanups, fn)
}

func (s *session) Errorf(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.errs = append(s.errs, fmt.Errorf(format, args...))
}

func (s *session) Error(args ...any) { s.Errorf("%s", fmt.Sprint(args...)) }

func (s *session) Fatalf(format string, args ...any) {
	panic(sessionFatal{fmt.Errorf(format, args...)})
}

func (s *session) Fatal(args ...any) { panic(sessionFatal{errors.New(fmt.Sprint(args...))}) }

func (s *session) Skipf(format string, args ...any) { s.Fatalf(format, args...) }

func (s *session) Logf(string, ...any) {}

// run calls fn; a Fatalf within it undoes what was set up (close) and
// becomes the returned error.
func (s *session) run(fn func()) (err error) {
	defer func() {
		if r := recover(); r != nil {
			f, ok := r.(sessionFatal)
			cerr := s.close()
			if !ok {
				panic(r)
			}
			err = errors.Join(f.err, cerr)
		}
	}()
	fn()
	return nil
}

// close runs the cleanups, last registered first, once, and returns the
// errors reported so far.
func (s *session) close() error {
	s.mu.Lock()
	cs := s.cleanups
	s.cleanups = nil
	s.mu.Unlock()
	for i := len(cs) - 1; i >= 0; i-- {
		cs[i]()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	err := errors.Join(s.errs...)
	s.errs = nil
	return err
}
