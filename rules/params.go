package rules

import (
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// actionParams lists the parameters each action takes; any other parameter
// on a rule is an error naming these.
var actionParams = [numActions][]string{
	ActionReject:    {"rcode", "ttl"},
	ActionSinkhole:  {"ttl"},
	ActionSpoof:     {"addresses", "ttl"},
	ActionDelay:     {"latency", "jitter", "on", "direction"},
	ActionThrottle:  {"rate", "direction"},
	ActionCut:       {"after_bytes", "after", "direction", "mode"},
	ActionHTTPError: {"status", "headers", "body", "latency", "jitter"},
	ActionRPCError:  {"code", "message", "jsonrpc"},
	ActionTLSFail:   {"failure"},
	ActionSlowClose: {"latency", "after_bytes", "direction"},
	ActionStall:     {"after_bytes", "direction"},
	ActionTLSReset:  {"mode"},
}

// closeModes lists the modes each action that ends connections accepts,
// its default first.
var closeModes = map[Action][]CloseMode{
	ActionCut:      {CloseFIN, CloseRST},
	ActionTLSReset: {CloseRST, CloseAlert},
}

func paramKeys() []string {
	var keys []string
	for _, ps := range actionParams {
		for _, p := range ps {
			if !contains(keys, p) {
				keys = append(keys, p)
			}
		}
	}
	return keys
}

// decodeParams checks that every parameter given belongs to r's action and
// parses each into its type.
func decodeParams(d *fileDecoder, r *Rule, given map[string]*yaml.Node, path string) {
	valid := actionParams[r.Action]
	for key, n := range given {
		if !contains(valid, key) {
			takes := "takes no parameters"
			if len(valid) > 0 {
				takes = "takes " + strings.Join(valid, ", ")
			}
			d.errf(n, join(path, key), "not a parameter of %s (%s %s)", r.Action, r.Action, takes)
		}
	}
	p := &r.Params
	str := func(key string) (string, *yaml.Node, string, bool) {
		n := given[key]
		if n == nil || !contains(valid, key) {
			return "", nil, "", false
		}
		s, ok := d.str(n, join(path, key))
		return s, n, join(path, key), ok
	}
	if s, n, fp, ok := str("rcode"); ok {
		i := indexOf(rcodeNames[:], strings.ToLower(s))
		if i < 0 {
			d.errf(n, fp, "%q is not an rcode (want one of %s)", s, strings.Join(rcodeNames[:], ", "))
		}
		p.RCode = RCode(max(i, 0))
	}
	if r.Action == ActionReject || r.Action == ActionSinkhole || r.Action == ActionSpoof {
		p.TTL = DefaultBlockTTL
	}
	if s, n, fp, ok := str("ttl"); ok {
		if t, err := parseDuration(s); err != nil {
			d.errf(n, fp, "%v", err)
		} else if t < time.Second || t%time.Second != 0 {
			d.errf(n, fp, "%q: want whole seconds, at least 1s (DNS TTLs are seconds; e.g. 60s)", s)
		} else {
			p.TTL = t
		}
	}
	if n := given["addresses"]; n != nil && contains(valid, "addresses") {
		d.strs(n, join(path, "addresses"), func(s string, n *yaml.Node, fp string) {
			a, err := netip.ParseAddr(s)
			if err != nil {
				d.errf(n, fp, "%q is not an IP address (want e.g. 192.0.2.1 or 2001:db8::1)", s)
				return
			}
			p.Addrs = append(p.Addrs, a.Unmap())
		})
	}
	for _, k := range []struct {
		key string
		dst *int64
		dur bool
	}{{"latency", nil, true}, {"jitter", nil, true}, {"after", nil, true}, {"rate", &p.Rate, false}, {"after_bytes", &p.AfterBytes, false}} {
		s, n, fp, ok := str(k.key)
		if !ok {
			continue
		}
		if k.dur {
			t, err := parseDuration(s)
			if err != nil {
				d.errf(n, fp, "%v", err)
			}
			switch k.key {
			case "latency":
				p.Latency = t
			case "jitter":
				p.Jitter = t
			case "after":
				p.After = t
			}
			continue
		}
		v, err := parseBytes(s, k.key == "rate")
		if err != nil {
			d.errf(n, fp, "%v", err)
		}
		*k.dst = v
	}
	decodeByteParams(d, r, str)
	if s, n, fp, ok := str("status"); ok {
		st, err := strconv.Atoi(s)
		if err != nil || st < 100 || st > 599 {
			d.errf(n, fp, "%q is not an HTTP status (want 100-599, e.g. 502)", s)
		}
		p.Status = st
	}
	if n := given["headers"]; n != nil && contains(valid, "headers") {
		p.Headers = http.Header{}
		hp := join(path, "headers")
		if n.Kind != yaml.MappingNode {
			d.errf(n, hp, "want a mapping of header names to values, got %s", kindName(n))
		}
		for i := 0; n.Kind == yaml.MappingNode && i+1 < len(n.Content); i += 2 {
			if v, ok := d.str(n.Content[i+1], join(hp, n.Content[i].Value)); ok {
				p.Headers.Add(n.Content[i].Value, v)
			}
		}
	}
	if s, _, _, ok := str("body"); ok {
		p.Body = s
	}
	if s, n, fp, ok := str("code"); ok {
		c, err := strconv.Atoi(s)
		if err != nil {
			d.errf(n, fp, "%q is not a JSON-RPC error code (want an integer, e.g. -32005)", s)
		}
		p.RPCCode = c
	}
	if s, _, _, ok := str("message"); ok {
		p.RPCMessage = s
	}
	if n := given["jsonrpc"]; n != nil && contains(valid, "jsonrpc") {
		d.strs(n, join(path, "jsonrpc"), func(s string, _ *yaml.Node, _ string) { p.RPCMethods = append(p.RPCMethods, s) })
	}
	if s, n, fp, ok := str("failure"); ok {
		i := indexOf(tlsFailureNames[:], strings.ToLower(s))
		if i < 0 {
			d.errf(n, fp, "%q is not a tls_fail kind (want one of %s)", s, strings.Join(tlsFailureNames[:], ", "))
		}
		p.TLSFailure = TLSFailure(max(i, 0))
	}
	requireParams(d, r, given, path)
}

// requireParams reports parameters an action cannot do without.
func requireParams(d *fileDecoder, r *Rule, given map[string]*yaml.Node, path string) {
	need := func(key, why string) {
		if given[key] == nil {
			d.errs.add(r.Pos, join(path, key), "missing: %s needs %s", r.Action, why)
		}
	}
	switch r.Action {
	case ActionSpoof:
		need("addresses", "the addresses to answer with (e.g. addresses: [192.0.2.1])")
	case ActionDelay, ActionSlowClose:
		need("latency", "a latency (e.g. latency: 2s)")
	case ActionThrottle:
		need("rate", "a rate (e.g. rate: 64kbit)")
	case ActionCut:
		if given["after_bytes"] == nil && given["after"] == nil {
			d.errs.add(r.Pos, path, "cut needs after_bytes (e.g. 16KiB) or after (e.g. 5s)")
		}
	case ActionHTTPError:
		need("status", "an HTTP status (e.g. status: 502)")
	case ActionRPCError:
		need("code", "a JSON-RPC error code (e.g. code: -32005)")
		if r.Params.RPCMessage == "" {
			r.Params.RPCMessage = "unicorn: injected error"
		}
	}
}

func indexOf(list []string, s string) int {
	for i, x := range list {
		if x == s {
			return i
		}
	}
	return -1
}

// decodeByteParams parses the parameters of the byte faults (direction,
// on, mode) and sets each action's defaults.
func decodeByteParams(d *fileDecoder, r *Rule, str func(string) (string, *yaml.Node, string, bool)) {
	p := &r.Params
	if r.Action.ByteFault() {
		p.Direction = DirBoth
		if r.Action == ActionDelay {
			p.Direction = DirDown // a late answer, unless the rule says otherwise
		}
	}
	if s, n, fp, ok := str("direction"); ok {
		if dir, found := directionNames[strings.ToLower(s)]; found {
			p.Direction = dir
		} else {
			d.errf(n, fp, "%q is not a direction (want up, down or both)", s)
		}
	}
	if s, n, fp, ok := str("on"); ok {
		i := indexOf(delayOnNames[:], strings.ToLower(s))
		if i < 0 {
			d.errf(n, fp, "%q is not a delay trigger (want one of %s)", s, strings.Join(delayOnNames[:], ", "))
		}
		p.DelayOn = DelayOn(max(i, 0))
	}
	if r.Action == ActionDelay && p.DelayOn == DelayOnConnect {
		if _, n, fp, ok := str("direction"); ok {
			d.errf(n, fp, "a delay on connect has no direction (give on: first_byte or on: chunk to delay bytes one way)")
		}
	}
	modes := closeModes[r.Action]
	if len(modes) > 0 {
		p.Close = modes[0]
	}
	if s, n, fp, ok := str("mode"); ok {
		names := make([]string, len(modes))
		for i, m := range modes {
			names[i] = m.String()
		}
		if i := indexOf(names, strings.ToLower(s)); i >= 0 {
			p.Close = modes[i]
		} else {
			d.errf(n, fp, "%q is not a mode of %s (want one of %s)", s, r.Action, strings.Join(names, ", "))
		}
	}
}

// decodeOnExisting parses a rule's on_existing: (n nil: not given).
func decodeOnExisting(d *fileDecoder, r *Rule, n *yaml.Node, path string) {
	if n == nil {
		return
	}
	s, ok := d.str(n, path)
	if !ok {
		return
	}
	i := indexOf(onExistingNames[1:], strings.ToLower(s))
	if i < 0 {
		d.errf(n, path, "%q is not a choice (want keep, cut or degrade)", s)
		return
	}
	o := OnExisting(i + 1)
	faulty := r.Action.ByteFault()
	if m := r.Modifiers; m != nil {
		for _, ph := range m.Phases {
			faulty = faulty || ph.Action.ByteFault()
		}
	}
	if o == OnExistingDegrade && !faulty {
		d.errf(n, path, "degrade applies a byte fault to open connections; %s is none (want keep or cut, or a delay, throttle, cut, slow_close or stall rule)", r.Action)
		return
	}
	r.OnExisting = o
}

// OnExisting is what decision d does to a connection already open that it
// now decides (a scenario switched on, rules reloaded, a phase begun): the
// rule's on_existing, else cut for actions that keep a flow from its
// destination (reject, blackhole, sinkhole, tls_reset) and keep for the
// others, by the action of d, which for a rule with phases is the current
// phase's. degrade on a phase that is no byte
// fault cuts when the phase blocks and keeps otherwise. A rule with
// first, every or probability keeps: it decides each flow once, when the
// flow starts, and an open connection has had its turn.
func (d Decision) OnExisting() OnExisting {
	if d.Rule == nil || d.Action == ActionAllow {
		return OnExistingKeep
	}
	if m := d.Rule.Modifiers; m != nil && m.counted() {
		return OnExistingKeep
	}
	blocks := d.Action.Blocking() || d.Action == ActionTLSReset
	switch o := d.Rule.OnExisting; {
	case o == OnExistingDegrade && !d.Action.ByteFault():
		if blocks {
			return OnExistingCut
		}
		return OnExistingKeep
	case o != OnExistingDefault:
		return o
	case blocks:
		return OnExistingCut
	}
	return OnExistingKeep
}
