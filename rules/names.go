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

// reserve makes room for n more bytes of names.
func (l *nameList) reserve(n int) {
	if cap(l.data)-len(l.data) < n {
		l.data = append(make([]byte, 0, len(l.data)+n), l.data...)
	}
}

// trim drops the spare capacity that growing left behind, which for a big
// list is up to a quarter of its size.
func (l *nameList) trim() {
	if cap(l.data)-len(l.data) > 4096 {
		l.data = append([]byte(nil), l.data...)
	}
}

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

// nameEntry is one slot of a nameTable: a name stored in one of the
// table's source lists, and the pair of rule lists it leads to. 12 bytes,
// since a million-name list keeps a million of them.
type nameEntry struct {
	off  uint32 // offset of the name in its source's data
	meta uint32 // source index << 16 | tag << 8 | name length; 0: empty slot
	pair uint32 // index into nameTable.pairs
}

func (e *nameEntry) tag() uint8 { return uint8(e.meta >> 8) }

// maxSources bounds the name lists one table can index (meta's 16 bits).
const maxSources = 1 << 16

// listPair is the rule lists of one name: for "domains" (the name and its
// subdomains) and for "hosts" (the name only).
type listPair struct{ suffix, exact uint32 }

// nameTable maps names to rule lists by open addressing (linear probing,
// at most 3/4 full). It holds no copy of the names: entries point into the
// services' nameLists. Each entry carries a one-byte tag from the name's
// hash, so a probe past another name reads only the entries, which sit
// together in memory, and compares a name only when the tags agree: a
// lookup costs about one cache miss for a name that is not there and two
// for one that is. Lookups are case-insensitive and allocate nothing.
type nameTable struct {
	srcs    [][]byte
	ents    []nameEntry
	n       int // slots in use
	pairs   []listPair
	pairIDs map[listPair]uint32
}

func newNameTable(sizeHint int) *nameTable {
	return &nameTable{
		ents:    make([]nameEntry, max(16, sizeHint*4/3+1)),
		pairs:   []listPair{{}},
		pairIDs: map[listPair]uint32{{}: 0},
	}
}

// home is the first slot to probe for hash h: the hash scaled to the
// table's size (its high bits), which need not be a power of two.
func (t *nameTable) home(h uint32) int {
	return int(uint64(h) * uint64(len(t.ents)) >> 32)
}

// tagOf takes the hash's low bits, which home hardly uses; never 0.
func tagOf(h uint32) uint8 { return uint8(h) | 1 }

func (t *nameTable) key(e *nameEntry) []byte {
	return t.srcs[e.meta>>16][e.off : e.off+e.meta&0xff]
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

// find returns the rule lists for name; the zero pair when it has none.
func (t *nameTable) find(name string) listPair {
	if t.n == 0 {
		return listPair{}
	}
	h := hashName(name)
	tag := tagOf(h)
	for i := t.home(h); ; {
		e := &t.ents[i]
		if e.meta == 0 {
			return listPair{}
		}
		if e.tag() == tag && equalFold(t.key(e), name) {
			return t.pairs[e.pair]
		}
		if i++; i == len(t.ents) {
			i = 0
		}
	}
}

// update sets the rule lists of the name at src[off:off+n], adding the
// name when it is new; fn gets the current lists and returns the new ones.
// The name must already be lowercase.
func (t *nameTable) update(src uint32, off, n int, fn func(listPair) listPair) {
	name := t.srcs[src][off : off+n]
	if (t.n+1)*4 > len(t.ents)*3 {
		t.grow()
	}
	h := hashName(name)
	tag := tagOf(h)
	i := t.home(h)
	for t.ents[i].meta != 0 {
		if e := &t.ents[i]; e.tag() == tag && bytes.Equal(t.key(e), name) {
			e.pair = t.pairID(fn(t.pairs[e.pair]))
			return
		}
		if i++; i == len(t.ents) {
			i = 0
		}
	}
	t.ents[i] = nameEntry{off: uint32(off), meta: src<<16 | uint32(tag)<<8 | uint32(n), pair: t.pairID(fn(listPair{}))}
	t.n++
}

func (t *nameTable) pairID(p listPair) uint32 {
	id, ok := t.pairIDs[p]
	if !ok {
		id = uint32(len(t.pairs))
		t.pairs = append(t.pairs, p)
		t.pairIDs[p] = id
	}
	return id
}

func (t *nameTable) grow() {
	old := t.ents
	t.ents = make([]nameEntry, len(old)*2)
	for j := range old {
		if old[j].meta == 0 {
			continue
		}
		i := t.home(hashName(t.key(&old[j])))
		for t.ents[i].meta != 0 {
			if i++; i == len(t.ents) {
				i = 0
			}
		}
		t.ents[i] = old[j]
	}
}

// addSource registers a name list's bytes and returns its index.
func (t *nameTable) addSource(data []byte) (uint32, error) {
	if len(t.srcs) >= maxSources {
		return 0, fmt.Errorf("more than %d name lists", maxSources)
	}
	t.srcs = append(t.srcs, data)
	return uint32(len(t.srcs) - 1), nil
}
