package rules

import (
	"errors"
	"fmt"
	"sort"
	"strings"
)

// Error is one problem in a rule file, at a position and a field path:
//
//	scenarios/gfw.yaml:42:11: rules[3].action: "blakhole" is not an action (want one of allow, reject, ...)
type Error struct {
	Pos  Pos    // where the offending value starts; Line 0 when unknown
	Path string // field path, e.g. "rules[3].action"; "" for the whole file
	Msg  string // what is wrong and, where it helps, what would be valid
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.Pos.File)
	if e.Pos.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Pos.Line)
		if e.Pos.Col > 0 {
			fmt.Fprintf(&b, ":%d", e.Pos.Col)
		}
	}
	b.WriteString(": ")
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// ErrorList is every problem found while loading rules. Loading never stops
// at the first error, so a user can fix a file in one pass.
type ErrorList []*Error

func (l ErrorList) Error() string {
	s := make([]string, len(l))
	for i, e := range l {
		s[i] = e.Error()
	}
	return strings.Join(s, "\n")
}

// Unwrap returns the errors, for errors.As on a single *Error.
func (l ErrorList) Unwrap() []error {
	errs := make([]error, len(l))
	for i, e := range l {
		errs[i] = e
	}
	return errs
}

// Errors returns the list of rule errors in err, if it is or wraps an
// ErrorList; otherwise nil.
func Errors(err error) ErrorList {
	var l ErrorList
	if errors.As(err, &l) {
		return l
	}
	return nil
}

// errs collects errors while loading.
type errs struct{ list ErrorList }

func (e *errs) add(pos Pos, path, format string, args ...any) {
	e.list = append(e.list, &Error{Pos: pos, Path: path, Msg: fmt.Sprintf(format, args...)})
}

// err returns the errors in file and position order, or nil.
func (e *errs) err() error {
	if len(e.list) == 0 {
		return nil
	}
	sort.SliceStable(e.list, func(i, j int) bool {
		a, b := e.list[i].Pos, e.list[j].Pos
		if a.File != b.File {
			return a.File < b.File
		}
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		return a.Col < b.Col
	})
	return e.list
}
