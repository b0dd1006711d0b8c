package control

import (
	"sync"
	"time"

	"github.com/chaos-unicorn/unicorn/rules"
)

// ReloadStatus is the outcome of the last rule reload.
type ReloadStatus struct {
	// At is when the last reload was tried; zero if none was.
	At time.Time `json:"at,omitzero"`
	// OK reports whether it put new rules in force.
	OK bool `json:"ok"`
	// Trigger says what asked for it: "file change", "SIGHUP".
	Trigger string `json:"trigger,omitempty"`
	// Error is the whole error of a failed reload, and Errors each rule
	// error in it with its position.
	Error  string      `json:"error,omitempty"`
	Errors []RuleError `json:"errors,omitempty"`
	// Reloads and Failures count the reloads tried and those that failed.
	Reloads  uint64 `json:"reloads"`
	Failures uint64 `json:"failures"`
}

// RuleError is one error of a rule file.
type RuleError struct {
	At    string `json:"at"`    // file:line:col
	Field string `json:"field"` // e.g. rules[3].action
	Error string `json:"error"` // the message, with the position
}

// Reloads records the outcome of rule reloads for the API and the
// dashboard. It is safe for concurrent use; the zero value is ready.
type Reloads struct {
	mu sync.Mutex
	st ReloadStatus
}

// Record notes a reload tried at at by trigger, which failed with err
// (nil: it succeeded).
func (r *Reloads) Record(at time.Time, trigger string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.st.At, r.st.Trigger, r.st.OK = at, trigger, err == nil
	r.st.Reloads++
	r.st.Error, r.st.Errors = "", nil
	if err == nil {
		return
	}
	r.st.Failures++
	r.st.Error = err.Error()
	for _, e := range rules.Errors(err) {
		r.st.Errors = append(r.st.Errors, RuleError{At: posCol(e.Pos), Field: e.Path, Error: e.Error()})
	}
}

// Status returns the last reload's outcome.
func (r *Reloads) Status() ReloadStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := r.st
	st.Errors = append([]RuleError(nil), r.st.Errors...)
	return st
}

func posCol(p rules.Pos) string {
	s := p.String()
	if p.Col > 0 {
		s += ":" + itoa(p.Col)
	}
	return s
}
