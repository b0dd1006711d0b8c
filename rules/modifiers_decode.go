package rules

import (
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// modifierKeys are the rule fields that say when a rule acts.
var modifierKeys = []string{"probability", "first", "every", "window", "schedule", "phases"}

var (
	windowKeys   = []string{"from", "until", "zone"}
	scheduleKeys = []string{"cron", "for", "zone"}
	phaseKeys    = append([]string{"for", "action"}, paramKeys()...)
)

// decodeModifiers takes the modifier fields but phases: out of given (a
// rule's fields that are neither match fields nor its action) and decodes
// them into r.Modifiers.
func decodeModifiers(d *fileDecoder, r *Rule, given map[string]*yaml.Node, path string) {
	m := &Modifiers{}
	found := false
	for _, key := range modifierKeys {
		n := given[key]
		if n == nil || key == "phases" {
			continue
		}
		found = true
		delete(given, key)
		fp := join(path, key)
		switch key {
		case "probability":
			m.Probability = decodeProbability(d, n, fp)
		case "first":
			m.First = decodeCount(d, n, fp)
		case "every":
			m.Every = decodeCount(d, n, fp)
		case "window":
			m.Window = decodeWindow(d, n, fp)
		case "schedule":
			m.Schedule = decodeSchedule(d, n, fp)
		}
	}
	if found {
		m.finish()
		r.Modifiers = m
	}
}

func decodeProbability(d *fileDecoder, n *yaml.Node, path string) float64 {
	s, ok := d.str(n, path)
	if !ok {
		return 0
	}
	t := strings.TrimSpace(s)
	scale := 1.0
	if p, ok := strings.CutSuffix(t, "%"); ok {
		t, scale = strings.TrimSpace(p), 100
	}
	p, err := strconv.ParseFloat(t, 64)
	p /= scale
	if err != nil || !(p > 0 && p <= 1) {
		d.errf(n, path, "%q is not a probability (want a number in (0, 1], e.g. 0.3, or a percentage, e.g. 30%%)", s)
		return 0
	}
	return p
}

func decodeCount(d *fileDecoder, n *yaml.Node, path string) uint64 {
	s, ok := d.str(n, path)
	if !ok {
		return 0
	}
	v, err := strconv.ParseUint(strings.TrimSpace(s), 10, 64)
	if err != nil || v < 1 {
		d.errf(n, path, "%q is not a count (want a whole number of at least 1, e.g. 3)", s)
		return 0
	}
	return v
}

// decodeZone decodes zone: the zone a window's times of day or a
// schedule are read in.
func decodeZone(d *fileDecoder, n *yaml.Node, path string) *time.Location {
	s, ok := d.str(n, path)
	if !ok {
		return time.UTC
	}
	loc, err := time.LoadLocation(s)
	if err != nil || s == "" || strings.EqualFold(s, "local") {
		d.errf(n, path, "%q is not a time zone (want an IANA name, e.g. Europe/Berlin, or UTC)", s)
		return time.UTC
	}
	return loc
}

func decodeWindow(d *fileDecoder, n *yaml.Node, path string) *Window {
	w := &Window{Loc: time.UTC}
	var from, until, zone *yaml.Node
	if !d.fields(n, path, windowKeys, func(key string, v *yaml.Node, _ string) {
		switch key {
		case "from":
			from = v
		case "until":
			until = v
		case "zone":
			zone = v
		}
	}) {
		return nil
	}
	// Each bound is an instant (RFC 3339) or a time of day; both alike.
	kinds := 0 // bit 0: an instant, bit 1: a time of day
	bound := func(v *yaml.Node, key string, at *time.Time, tod *time.Duration) {
		fp := join(path, key)
		s, ok := d.str(v, fp)
		if !ok {
			return
		}
		if t, err := time.Parse(time.RFC3339, s); err == nil {
			*at, kinds = t, kinds|1
		} else if c, ok := parseTimeOfDay(s); ok {
			*tod, kinds = c, kinds|2
		} else {
			d.errf(v, fp, "%q is not a time (want RFC 3339, e.g. 2026-04-01T09:00:00Z, or a time of day, e.g. 09:00)", s)
			kinds |= 4
		}
	}
	if from != nil {
		bound(from, "from", &w.From, &w.FromDay)
	}
	if until != nil {
		bound(until, "until", &w.Until, &w.UntilDay)
	}
	if zone != nil {
		w.Loc = decodeZone(d, zone, join(path, "zone"))
	}
	switch {
	case kinds&4 != 0:
		return nil
	case from == nil && until == nil:
		d.errf(n, path, "give from:, until: or both (RFC 3339 instants, or times of day such as 09:00 with both)")
	case kinds == 3:
		d.errf(n, path, "from: and until: must both be instants (RFC 3339) or both times of day (09:00)")
	case kinds == 2:
		w.Daily = true
		switch {
		case from == nil || until == nil:
			d.errf(n, path, "a daily window needs both from: and until: (e.g. {from: \"09:00\", until: \"17:00\"})")
		case w.FromDay == w.UntilDay:
			d.errf(until, join(path, "until"), "%s is the same time of day as from: the window would be empty (a window over midnight has from after until, e.g. 22:00 to 06:00)", clockText(w.UntilDay))
		}
	case kinds == 1:
		if zone != nil {
			d.errf(zone, join(path, "zone"), "zone applies to times of day only; an RFC 3339 time carries its own offset")
		}
		if from != nil && until != nil && !w.Until.After(w.From) {
			d.errf(until, join(path, "until"), "%s is not after from (%s): the window would be empty", w.Until.Format(time.RFC3339), w.From.Format(time.RFC3339))
		}
	}
	return w
}

func decodeSchedule(d *fileDecoder, n *yaml.Node, path string) *Schedule {
	s := &Schedule{Loc: time.UTC}
	var cronNode, forNode *yaml.Node
	if !d.fields(n, path, scheduleKeys, func(key string, v *yaml.Node, fp string) {
		switch key {
		case "cron":
			cronNode = v
			if text, ok := d.str(v, fp); ok {
				spec, err := parseCron(text)
				if err != nil {
					d.errf(v, fp, "%v", err)
				}
				s.Cron, s.spec = strings.Join(strings.Fields(text), " "), spec
			}
		case "for":
			forNode = v
			if text, ok := d.str(v, fp); ok {
				t, err := parseDuration(text)
				switch {
				case err != nil:
					d.errf(v, fp, "%v", err)
				case t <= 0 || t > MaxScheduleFor:
					d.errf(v, fp, "%q: want more than 0 and at most %s (e.g. 5m)", text, durText(MaxScheduleFor))
				}
				s.For = t
			}
		case "zone":
			s.Loc = decodeZone(d, v, fp)
		}
	}) {
		return nil
	}
	if cronNode == nil {
		d.errf(n, join(path, "cron"), "missing: a schedule needs a cron expression (e.g. cron: \"*/15 * * * *\")")
	}
	if forNode == nil {
		d.errf(n, join(path, "for"), "missing: a schedule needs how long each period lasts (e.g. for: 5m)")
	}
	return s
}

// durText is d in hours when it is whole hours: 168h, not 168h0m0s.
func durText(d time.Duration) string {
	if d%time.Hour == 0 {
		return strconv.Itoa(int(d/time.Hour)) + "h"
	}
	return d.String()
}

// decodePhases decodes phases: (n) of rule r, whose other fields
// that are not match fields are in given. Each phase has its own action
// and parameters; the rule takes the first phase's.
func decodePhases(d *fileDecoder, r *Rule, actionNode, n *yaml.Node, given map[string]*yaml.Node, path string) {
	pp := join(path, "phases")
	if actionNode != nil {
		d.errf(actionNode, join(path, "action"), "give action: or phases:, not both (each phase has its own action)")
	}
	if jn := given["jsonrpc"]; jn != nil {
		// On the rule, jsonrpc is a match field, as on any action but rpc_error.
		if r.http == nil {
			r.http = &httpMatch{}
		}
		decodeContent(d, r.http, "jsonrpc", jn, join(path, "jsonrpc"))
		delete(given, "jsonrpc")
	}
	for key, v := range given {
		d.errf(v, join(path, key), "with phases:, an action's parameters go inside each phase (e.g. phases: [{for: 10m, action: delay, latency: 10s}, {action: reject}])")
	}
	items := d.list(n, pp)
	if n.Kind == yaml.SequenceNode && len(items) == 0 {
		d.errf(n, pp, "want at least one phase (e.g. [{for: 10m, action: delay, latency: 10s}, {action: reject}])")
	}
	var phases []Phase
	for i, it := range items {
		ip := index(pp, i)
		ph := Phase{Pos: d.pos(it)}
		var forNode, actNode *yaml.Node
		params := map[string]*yaml.Node{}
		if !d.fields(it, ip, phaseKeys, func(key string, v *yaml.Node, fp string) {
			switch key {
			case "for":
				forNode = v
				if text, ok := d.str(v, fp); ok {
					t, err := parseDuration(text)
					switch {
					case err != nil:
						d.errf(v, fp, "%v", err)
					case t <= 0:
						d.errf(v, fp, "%q is not a phase length (want more than 0, e.g. 10m)", text)
					}
					ph.For = t
				}
			case "action":
				actNode = v
			default:
				params[key] = v
			}
		}) {
			continue
		}
		if forNode == nil && i < len(items)-1 {
			d.errf(it, join(ip, "for"), "missing: every phase but the last needs for: (e.g. for: 10m); the last one, without it, lasts for ever")
		}
		if actNode == nil {
			d.errf(it, join(ip, "action"), "missing (want one of %s)", ActionNames())
			continue
		}
		s, ok := d.str(actNode, join(ip, "action"))
		if !ok {
			continue
		}
		a, ok := ParseAction(s)
		if !ok {
			d.errf(actNode, join(ip, "action"), "%q is not an action (want one of %s)", s, ActionNames())
			continue
		}
		tmp := &Rule{Action: a, Pos: ph.Pos}
		decodeParams(d, tmp, params, ip)
		if a == ActionTLSFail && r.http != nil {
			d.errf(it, ip, "tls_fail fails the handshake, before any request: its rule cannot match methods, paths, request_headers or jsonrpc")
		}
		ph.Action, ph.Params = a, tmp.Params
		phases = append(phases, ph)
	}
	if len(phases) == 0 {
		return
	}
	if r.Modifiers == nil {
		r.Modifiers = &Modifiers{}
	}
	r.Modifiers.Phases = phases
	r.Modifiers.finish()
	r.Action, r.Params = phases[0].Action, phases[0].Params
}
