package dnsblock

import (
	"context"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/chaos-unicorn/unicorn/rules"
)

// Bounds of the decision log. A flood of one name (an app retrying in a
// loop) costs one line per second; a flood of many names (dnsperf over a
// block list) costs at most foldLines lines per second plus one per
// client and rule.
const (
	// foldWindow is how long repeats of a logged decision are counted
	// before one line reports them.
	foldWindow = time.Second
	// foldSweep is how often the counts are looked at; a summary comes
	// between foldWindow and foldWindow+foldSweep after its first line.
	foldSweep = 100 * time.Millisecond
	// foldKeys bounds the decisions whose repeats are counted; when it is
	// full the oldest is reported and forgotten.
	foldKeys = 4096
	// foldLines bounds the lines (first decisions and summaries) per
	// foldWindow. Beyond it, decisions are counted per client and rule
	// only, and reported once per window with name=*.
	foldLines = 200
	// foldCoarse bounds the client-and-rule counts; when it is full they
	// are all reported at once.
	foldCoarse = 1024
)

// decisionLog logs every decision that is not a plain allow, with
// scenario, rule and client: the first decision of each (client, name,
// type, rule) at Info (Debug for an allow rule's exception), as msg "dns
// decision"; repeats of it within foldWindow as one later line with
// repeated=N. It is safe for concurrent use. Its summaries come from
// run (while the server serves), from note itself (a server mounted on a
// caller's dns.Server) and from flush.
type decisionLog struct {
	log *slog.Logger
	now func() time.Time
	// Bounds: foldKeys, foldLines and foldCoarse, smaller in tests.
	maxKeys, maxLines, maxCoarse int

	mu        sync.Mutex
	keys      map[foldKey]*foldEntry
	head      *foldEntry // oldest window first; windows restart at the tail
	tail      *foldEntry
	lines     int       // lines left in this window
	windowEnd time.Time // when lines is refilled and coarse reported
	nextSweep time.Time
	coarse    map[coarseKey]*coarseEntry
}

type foldKey struct {
	client netip.Addr
	name   string // lower case
	qtype  uint16
	action rules.Action
	rule   *rules.Rule
}

type foldEntry struct {
	key        foldKey
	name       string // as first asked
	d          rules.Decision
	start      time.Time // of the window counting n
	n          int       // repeats in this window
	prev, next *foldEntry
}

type coarseKey struct {
	client netip.Addr
	action rules.Action
	rule   *rules.Rule
}

type coarseEntry struct {
	d rules.Decision
	n int
}

func newDecisionLog(log *slog.Logger, now func() time.Time) *decisionLog {
	return &decisionLog{log: log, now: now, maxKeys: foldKeys, maxLines: foldLines, maxCoarse: foldCoarse,
		keys: make(map[foldKey]*foldEntry), coarse: make(map[coarseKey]*coarseEntry)}
}

// note logs d, the decision about q from client, or counts it as a repeat.
func (l *decisionLog) note(client netip.Addr, q *request, d rules.Decision) {
	level := slog.LevelInfo
	if d.Action == rules.ActionAllow {
		if d.Rule == nil {
			return // a plain allow
		}
		level = slog.LevelDebug
	}
	if !l.log.Enabled(context.Background(), level) {
		return // the common quiet case costs nothing more
	}
	now := l.now()
	// q.lower may alias a packet buffer: the lookup does not keep it, an
	// insert clones it.
	k := foldKey{client: client, name: q.lower, qtype: q.qtype, action: d.Action, rule: d.Rule}
	l.mu.Lock()
	defer l.mu.Unlock()
	if !now.Before(l.nextSweep) {
		l.sweep(now, false)
	}
	if e, ok := l.keys[k]; ok {
		e.n++
		return
	}
	if l.lines == 0 {
		l.count(coarseKey{client, d.Action, d.Rule}, d, 1)
		return
	}
	l.lines--
	if len(l.keys) >= l.maxKeys {
		l.report(l.head)
		l.remove(l.head)
	}
	k.name = strings.Clone(k.name)
	e := &foldEntry{key: k, name: strings.Clone(q.name), d: d, start: now}
	l.keys[k] = e
	l.push(e)
	l.line(level, e.key.client, e.name, e.key.qtype, d, 0)
}

// run sweeps every foldSweep until ctx is done.
func (l *decisionLog) run(ctx context.Context) {
	t := time.NewTicker(foldSweep)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			l.mu.Lock()
			l.sweep(l.now(), false)
			l.mu.Unlock()
		}
	}
}

// flush reports every count now, as when the server stops.
func (l *decisionLog) flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweep(l.now(), true)
}

// sweep reports the windows that have ended (all of them if all): a
// decision repeated in its window gets a summary line and a new window,
// one that was not is forgotten. The list is in order of window start, so
// the walk stops at the first window still open. Once per foldWindow the
// line budget is refilled and the client-and-rule counts are reported.
// Caller holds mu.
func (l *decisionLog) sweep(now time.Time, all bool) {
	l.nextSweep = now.Add(foldSweep)
	if all || !now.Before(l.windowEnd) {
		l.reportCoarse()
		l.lines = l.maxLines
		l.windowEnd = now.Add(foldWindow)
	}
	for range len(l.keys) { // each entry at most once: re-pushed ones are not due
		e := l.head
		if e == nil || (!all && now.Sub(e.start) < foldWindow) {
			break
		}
		l.remove(e)
		if e.n == 0 {
			continue
		}
		l.report(e)
		if e.n == 0 && !all { // a line was written: count on
			e.start = now
			l.keys[e.key] = e
			l.push(e)
		}
	}
	if all {
		l.reportCoarse()
	}
}

// report logs e's repeats, if any, as one line, or counts them per client
// and rule when this window's lines are spent; e.n is then 0 for a line
// and unchanged when counted. Caller holds mu.
func (l *decisionLog) report(e *foldEntry) {
	if e.n == 0 {
		return
	}
	if l.lines == 0 {
		l.count(coarseKey{e.key.client, e.key.action, e.key.rule}, e.d, e.n)
		return
	}
	l.lines--
	l.line(levelOf(e.d), e.key.client, e.name, e.key.qtype, e.d, e.n)
	e.n = 0
}

func (l *decisionLog) count(k coarseKey, d rules.Decision, n int) {
	c, ok := l.coarse[k]
	if !ok {
		if len(l.coarse) >= l.maxCoarse {
			l.reportCoarse()
		}
		c = &coarseEntry{d: d}
		l.coarse[k] = c
	}
	c.n += n
}

func (l *decisionLog) reportCoarse() {
	for k, c := range l.coarse {
		l.line(levelOf(c.d), k.client, "*", 0, c.d, c.n)
	}
	clear(l.coarse)
}

func levelOf(d rules.Decision) slog.Level {
	if d.Action == rules.ActionAllow {
		return slog.LevelDebug
	}
	return slog.LevelInfo
}

// line logs one decision line; repeated > 0 makes it a summary. qtype 0
// (with name "*") leaves the type out.
func (l *decisionLog) line(level slog.Level, client netip.Addr, name string, qtype uint16, d rules.Decision, repeated int) {
	attrs := make([]slog.Attr, 0, 10)
	attrs = append(attrs, slog.String("client", client.String()), slog.String("name", name))
	if qtype != 0 {
		attrs = append(attrs, slog.String("qtype", qtypeString(qtype)))
	}
	attrs = append(attrs, d.LogAttrs()...)
	if repeated > 0 {
		attrs = append(attrs, slog.Int("repeated", repeated))
	}
	l.log.LogAttrs(context.Background(), level, "dns decision", attrs...)
}

// push appends e at the tail. Caller holds mu.
func (l *decisionLog) push(e *foldEntry) {
	e.prev, e.next = l.tail, nil
	if l.tail != nil {
		l.tail.next = e
	} else {
		l.head = e
	}
	l.tail = e
}

// remove unlinks e and forgets its key. Caller holds mu.
func (l *decisionLog) remove(e *foldEntry) {
	if e.prev != nil {
		e.prev.next = e.next
	} else {
		l.head = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	} else {
		l.tail = e.prev
	}
	e.prev, e.next = nil, nil
	delete(l.keys, e.key)
}
