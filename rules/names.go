package rules

import (
	"bytes"
	"fmt"
)

// nameList is a compact list of lowercase domain names without trailing
// dots, stored newline-separated in one byte slice: a million names cost
// their bytes and nothing per name, where []string would add 16 bytes and an
// allocation each.
type nameList struct {
	data []byte
	n    int
}

func (l *nameList) add(name string) {
	l.data = append(l.data, name...)
	l.data = append(l.data, '\n')
	l.n++
}

func (l *nameList) len() int { return l.n }

// each calls fn with every name and its offset in l.data.
func (l *nameList) each(fn func(name []byte, off int)) {
	off := 0
	for off < len(l.data) {
		end := bytes.IndexByte(l.data[off:], '\n')
		fn(l.data[off:off+end], off)
		off += end + 1
	}
}

// strings returns the names, for tests and small lists.
func (l *nameList) strings() []string {
	var s []string
	l.each(func(b []byte, _ int) { s = append(s, string(b)) })
	return s
}

// normalizeName lowercases a domain name and strips one trailing dot,
// checking that it is a plausible DNS name. A leading "*." (wildcard) is
// removed, since a domain already covers its subdomains.
func normalizeName(s string) (string, error) {
	var l nameList
	if err := l.addName([]byte(s)); err != nil {
		return "", err
	}
	return string(l.data[:len(l.data)-1]), nil
}

// addName validates raw as a domain name (labels of 1-63 letters, digits,
// '-' or '_'; 253 bytes in all) and appends it lowercased, without its
// trailing dot or a leading "*.". It allocates only when l grows.
func (l *nameList) addName(raw []byte) error {
	n := bytes.TrimSpace(raw)
	if len(n) >= 2 && n[0] == '*' && n[1] == '.' {
		n = n[2:]
	}
	if len(n) > 0 && n[len(n)-1] == '.' {
		n = n[:len(n)-1]
	}
	bad := func(why string) error { return badName(raw, why) }
	switch {
	case len(n) == 0:
		return bad("empty")
	case len(n) > 253:
		return bad("longer than 253 bytes")
	}
	start := len(l.data)
	label := 0
	for _, c := range n {
		c = lower(c)
		switch {
		case c == '.':
			if label == 0 {
				l.data = l.data[:start]
				return bad("empty label")
			}
			label = -1
		case c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_':
		default:
			l.data = l.data[:start]
			return bad(fmt.Sprintf("bad character %q", c))
		}
		if label++; label > 63 {
			l.data = l.data[:start]
			return bad("label longer than 63 bytes")
		}
		l.data = append(l.data, c)
	}
	if label == 0 {
		l.data = l.data[:start]
		return bad("empty label")
	}
	l.data = append(l.data, '\n')
	l.n++
	return nil
}

func badName(raw []byte, why string) error {
	return fmt.Errorf("%q is not a domain name (%s)", raw, why)
}

// lower returns the ASCII lowercase of b.
func lower(c byte) byte {
	if c >= 'A' && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// hashName is FNV-1a over the lowercased bytes of s.
func hashName[S string | []byte](s S) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(s); i++ {
		h ^= uint32(lower(s[i]))
		h *= 16777619
	}
	return h
}

// nameEntry is one key of a nameTable: a name stored in one of the table's
// source lists, and the rule lists it leads to.
type nameEntry struct {
	src    uint16 // index into nameTable.srcs
	n      uint16 // length of the name
	off    uint32 // offset of the name in the source's data
	suffix uint32 // rule list for "domains" (the name and its subdomains)
	exact  uint32 // rule list for "hosts" (the name only)
}

// nameTable maps names to rule lists by open addressing over entries. It
// holds no copy of the names: entries point into the services' nameLists.
// Lookups are case-insensitive and allocate nothing.
type nameTable struct {
	srcs    [][]byte
	entries []nameEntry
	slots   []uint32 // 0 is empty, else entry index + 1
	mask    uint32
}

func newNameTable(sizeHint int) *nameTable {
	size := 16
	for size < sizeHint*2 {
		size <<= 1
	}
	return &nameTable{slots: make([]uint32, size), mask: uint32(size - 1), entries: make([]nameEntry, 0, sizeHint)}
}

func (t *nameTable) key(e *nameEntry) []byte {
	return t.srcs[e.src][e.off : e.off+uint32(e.n)]
}

func equalFold(stored []byte, s string) bool {
	if len(stored) != len(s) {
		return false
	}
	for i := 0; i < len(s); i++ {
		if stored[i] != lower(s[i]) {
			return false
		}
	}
	return true
}

// find returns the entry for name, or nil.
func (t *nameTable) find(name string) *nameEntry {
	if len(t.entries) == 0 {
		return nil
	}
	for i := hashName(name) & t.mask; ; i = (i + 1) & t.mask {
		s := t.slots[i]
		if s == 0 {
			return nil
		}
		if e := &t.entries[s-1]; equalFold(t.key(e), name) {
			return e
		}
	}
}

// insert returns the entry for the name at src[off:off+n], adding it when
// it is new. The name must already be lowercase.
func (t *nameTable) insert(src uint16, off, n int) *nameEntry {
	name := t.srcs[src][off : off+n]
	if len(t.entries)*4 >= len(t.slots)*3 {
		t.grow()
	}
	i := hashName(name) & t.mask
	for ; t.slots[i] != 0; i = (i + 1) & t.mask {
		if e := &t.entries[t.slots[i]-1]; bytes.Equal(t.key(e), name) {
			return e
		}
	}
	t.entries = append(t.entries, nameEntry{src: src, n: uint16(n), off: uint32(off)})
	t.slots[i] = uint32(len(t.entries))
	return &t.entries[len(t.entries)-1]
}

func (t *nameTable) grow() {
	size := len(t.slots) * 2
	t.slots = make([]uint32, size)
	t.mask = uint32(size - 1)
	for idx := range t.entries {
		i := hashName(t.key(&t.entries[idx])) & t.mask
		for t.slots[i] != 0 {
			i = (i + 1) & t.mask
		}
		t.slots[i] = uint32(idx + 1)
	}
}

// addSource registers a name list's bytes and returns its index.
func (t *nameTable) addSource(data []byte) uint16 {
	t.srcs = append(t.srcs, data)
	return uint16(len(t.srcs) - 1)
}
