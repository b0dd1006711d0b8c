package testbed

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"
)

// lines is an io.Writer that keeps what a process writes, line by line,
// and wakes those waiting for a line.
type lines struct {
	mu      sync.Mutex
	partial []byte
	all     []string
	changed chan struct{} // closed and replaced on every complete line
}

func newLines() *lines { return &lines{changed: make(chan struct{})} }

func (l *lines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial = append(l.partial, p...)
	added := false
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		l.all = append(l.all, string(l.partial[:i]))
		l.partial = l.partial[i+1:]
		added = true
	}
	if added {
		close(l.changed)
		l.changed = make(chan struct{})
	}
	return len(p), nil
}

// snapshot returns the complete lines so far and a channel closed when
// another one arrives.
func (l *lines) snapshot() ([]string, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.all...), l.changed
}

// String is everything written so far, the unfinished line included.
func (l *lines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := strings.Join(l.all, "\n")
	if len(l.all) > 0 {
		s += "\n"
	}
	return s + string(l.partial)
}

// waitFor waits until found reports true for the lines so far, until
// timeout passes, or until stop is closed; it reports whether found did.
func (l *lines) waitFor(timeout time.Duration, stop <-chan struct{}, found func([]string) bool) bool {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		all, changed := l.snapshot()
		if found(all) {
			return true
		}
		select {
		case <-changed:
		case <-stop:
			all, _ := l.snapshot() // lines written just before the exit
			return found(all)
		case <-t.C:
			return false
		}
	}
}

// LogLine is one JSON log record unicorn wrote to stderr (--log-format
// json): "time", "level", "msg", "component" and the record's attributes.
type LogLine map[string]any

// Str returns the attribute key as text ("" when absent); numbers are
// formatted as JSON would write them.
func (l LogLine) Str(key string) string {
	switch v := l[key].(type) {
	case nil:
		return ""
	case string:
		return v
	case float64:
		return fmt.Sprint(v)
	default:
		b, _ := json.Marshal(v)
		return string(b)
	}
}

// Has reports whether every key of want is in l with that value (as Str
// gives it).
func (l LogLine) Has(want map[string]string) bool {
	for k, v := range want {
		if l.Str(k) != v {
			return false
		}
	}
	return true
}

// parseLogs returns the lines that are JSON objects.
func parseLogs(all []string) []LogLine {
	var out []LogLine
	for _, s := range all {
		var l LogLine
		if json.Unmarshal([]byte(s), &l) == nil {
			out = append(out, l)
		}
	}
	return out
}
