package rules

import (
	"fmt"
	"io"
	"sort"
	"strings"
)

// Describe writes a plain-text summary of the set: each scenario with its
// rules, then each service. The form is stable; golden tests compare it.
func (s *Set) Describe(w io.Writer) {
	for _, sc := range s.Scenarios {
		opt := ""
		if sc.Optional {
			opt = " (optional)"
		}
		desc := ""
		if sc.Description != "" {
			desc = ": " + sc.Description
		}
		fmt.Fprintf(w, "scenario %s%s%s\n", sc.Name, opt, desc)
		for _, r := range sc.Rules {
			fmt.Fprintf(w, "  %s\n", r.Describe())
		}
	}
	names := make([]string, 0, len(s.Services))
	for n := range s.Services {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "service %s: %s\n", n, s.Services[n].describe())
	}
}

// Describe is one line saying what the rule matches and does.
func (r *Rule) Describe() string {
	var b strings.Builder
	fmt.Fprintf(&b, "rules[%d] %s: ", r.Index, r.Pos)
	switch {
	case r.Service != "":
		b.WriteString("service " + r.Service)
	case r.svc != nil:
		b.WriteString(r.svc.describe())
	default:
		b.WriteString("any")
	}
	if r.http != nil {
		if m := r.http.describe(); m != "" {
			b.WriteString(" " + m)
		}
	}
	if r.clients != nil {
		cs := make([]string, len(r.clients))
		for i, c := range r.clients {
			cs[i] = c.String()
		}
		fmt.Fprintf(&b, " clients=[%s]", strings.Join(cs, " "))
	}
	if m := r.Modifiers; m != nil && len(m.Phases) > 0 {
		b.WriteString(" -> " + m.describePhases())
	} else {
		b.WriteString(" -> " + r.Action.String())
		if p := r.Params.describe(r.Action); p != "" {
			b.WriteString(" " + p)
		}
	}
	if m := r.Modifiers; m != nil {
		if s := m.describe(); s != "" {
			b.WriteString(" when " + s)
		}
	}
	if r.OnExisting != OnExistingDefault {
		b.WriteString(" on_existing=" + r.OnExisting.String())
	}
	return b.String()
}

func (s *Service) describe() string {
	var parts []string
	add := func(key string, n int, items func(i int) string) {
		if n == 0 {
			return
		}
		show := make([]string, 0, min(n, 5))
		for i := 0; i < n && i < 5; i++ {
			show = append(show, items(i))
		}
		if n > 5 {
			show = append(show, fmt.Sprintf("... %d in all", n))
		}
		parts = append(parts, fmt.Sprintf("%s=[%s]", key, strings.Join(show, " ")))
	}
	d, h := s.Domains(), s.Hosts()
	add("domains", len(d), func(i int) string { return d[i] })
	add("hosts", len(h), func(i int) string { return h[i] })
	add("regex", len(s.Regex), func(i int) string { return strings.TrimPrefix(s.Regex[i].String(), "(?i)") })
	add("ips", len(s.Prefixes), func(i int) string { return s.Prefixes[i].String() })
	add("ports", len(s.Ports), func(i int) string { return s.Ports[i].String() })
	return strings.Join(parts, " ")
}

func (p *Params) describe(a Action) string {
	var parts []string
	kv := func(k string, v any) { parts = append(parts, fmt.Sprintf("%s=%v", k, v)) }
	switch a {
	case ActionReject:
		kv("rcode", p.RCode)
		kv("ttl", p.TTL)
	case ActionSinkhole:
		kv("ttl", p.TTL)
	case ActionSpoof:
		kv("addresses", p.Addrs)
		kv("ttl", p.TTL)
	case ActionDelay:
		kv("latency", p.Latency)
		if p.Jitter > 0 {
			kv("jitter", p.Jitter)
		}
		if p.DelayOn != DelayOnConnect {
			kv("on", p.DelayOn)
			kv("direction", p.Direction)
		}
	case ActionThrottle:
		kv("rate", fmt.Sprintf("%dB/s", p.Rate))
		kv("direction", p.Direction)
	case ActionCut:
		if p.AfterBytes > 0 {
			kv("after_bytes", p.AfterBytes)
		}
		if p.After > 0 {
			kv("after", p.After)
		}
		kv("direction", p.Direction)
		kv("mode", p.Close)
	case ActionSlowClose:
		kv("latency", p.Latency)
		if p.AfterBytes > 0 {
			kv("after_bytes", p.AfterBytes)
		}
		kv("direction", p.Direction)
	case ActionStall:
		kv("after_bytes", p.AfterBytes)
		kv("direction", p.Direction)
	case ActionTLSReset:
		kv("mode", p.Close)
	case ActionHTTPError:
		kv("status", p.Status)
		keys := make([]string, 0, len(p.Headers))
		for k := range p.Headers {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			kv("header."+k, strings.Join(p.Headers[k], ","))
		}
		if p.Body != "" {
			kv("body", fmt.Sprintf("%q", p.Body))
		}
		if p.Latency > 0 {
			kv("latency", p.Latency)
		}
	case ActionRPCError:
		kv("code", p.RPCCode)
		kv("message", fmt.Sprintf("%q", p.RPCMessage))
		if len(p.RPCMethods) > 0 {
			kv("jsonrpc", p.RPCMethods)
		}
	case ActionTLSFail:
		kv("failure", p.TLSFailure)
	}
	return strings.Join(parts, " ")
}
