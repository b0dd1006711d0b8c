package control

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
)

// EventLog writes events to a file as JSON Lines, one event per line, and
// rotates it by size: when a line would take the file past MaxSize, FILE
// becomes FILE.1, FILE.1 becomes FILE.2 and so on up to FILE.Keep, the
// oldest is removed, and a new FILE starts.
type EventLog struct {
	path    string
	maxSize int64
	keep    int

	mu   sync.Mutex
	f    *os.File
	size int64
}

// DefaultEventLogSize is the rotation size when none is given.
const DefaultEventLogSize = 10 << 20

// OpenEventLog opens (appending to) the event log at path. maxSize <= 0
// means DefaultEventLogSize; keep is how many rotated files to keep (0:
// none, the file just starts over).
func OpenEventLog(path string, maxSize int64, keep int) (*EventLog, error) {
	if maxSize <= 0 {
		maxSize = DefaultEventLogSize
	}
	if keep < 0 {
		return nil, fmt.Errorf("event log: keep %d is negative", keep)
	}
	l := &EventLog{path: path, maxSize: maxSize, keep: keep}
	if err := l.open(); err != nil {
		return nil, err
	}
	return l, nil
}

func (l *EventLog) open() error {
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("event log: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("event log: %w", err)
	}
	l.f, l.size = f, st.Size()
	return nil
}

// Path returns the file the log writes to.
func (l *EventLog) Path() string { return l.path }

// Write appends e as one line, rotating first if the line would not fit.
func (l *EventLog) Write(e *Event) error {
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	b = append(b, '\n')
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return errors.New("event log: closed")
	}
	if l.size > 0 && l.size+int64(len(b)) > l.maxSize {
		if err := l.rotate(); err != nil {
			return err
		}
	}
	n, err := l.f.Write(b)
	l.size += int64(n)
	return err
}

// rotate shifts FILE.i to FILE.i+1 (dropping FILE.keep) and FILE to FILE.1.
func (l *EventLog) rotate() error {
	if err := l.f.Close(); err != nil {
		return fmt.Errorf("event log: %w", err)
	}
	l.f = nil
	if l.keep == 0 {
		if err := os.Remove(l.path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("event log: %w", err)
		}
	} else {
		os.Remove(fmt.Sprintf("%s.%d", l.path, l.keep))
		for i := l.keep - 1; i >= 1; i-- {
			err := os.Rename(fmt.Sprintf("%s.%d", l.path, i), fmt.Sprintf("%s.%d", l.path, i+1))
			if err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("event log: %w", err)
			}
		}
		if err := os.Rename(l.path, l.path+".1"); err != nil {
			return fmt.Errorf("event log: %w", err)
		}
	}
	return l.open()
}

// Close closes the file.
func (l *EventLog) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}
