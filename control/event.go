package control

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/chaos-unicorn/unicorn/rules"
)

// Event is one decision that was not a plain allow, as the dashboard, the
// SSE stream and the event log show it.
type Event struct {
	// Seq numbers events from 1 in the order the hub took them; the SSE
	// stream uses it as the event id.
	Seq    uint64    `json:"seq"`
	Time   time.Time `json:"time"`
	Device string    `json:"device,omitempty"` // the client's address
	Layer  string    `json:"layer"`            // dns, http, tls, tcp, udp, socks
	// Target is the name asked for, or the address, with ":port" at the
	// connection layers.
	Target   string `json:"target"`
	Method   string `json:"method,omitempty"`
	Path     string `json:"path,omitempty"`
	Scenario string `json:"scenario,omitempty"`
	Service  string `json:"service,omitempty"`
	// Rule is the rule's file:line, RuleIndex its position in the scenario.
	Rule      string `json:"rule,omitempty"`
	RuleIndex int    `json:"rule_index"`
	Action    string `json:"action"`
	// Outcome says in a tester's words what the device got: "NXDOMAIN",
	// "403 page", "no answer", "delayed 2s".
	Outcome string `json:"outcome"`
}

// Blocked reports whether the event stopped the flow from reaching its
// destination (reject, blackhole, sinkhole, spoof) or answered in its
// place (http_error, rpc_error, tls_fail).
func (e *Event) Blocked() bool {
	a, _ := rules.ParseAction(e.Action)
	switch a {
	case rules.ActionReject, rules.ActionBlackhole, rules.ActionSinkhole, rules.ActionSpoof,
		rules.ActionHTTPError, rules.ActionRPCError, rules.ActionTLSFail:
		return true
	}
	return false
}

// target formats where a flow went, as Event.Target.
func target(l rules.Layer, host string, addr netip.Addr, port uint16) string {
	t := strings.TrimSuffix(host, ".")
	if t == "" && addr.IsValid() {
		t = addr.String()
	}
	if port != 0 && l != rules.LayerDNS {
		if strings.IndexByte(t, ':') >= 0 {
			t = "[" + t + "]"
		}
		t += ":" + strconv.Itoa(int(port))
	}
	return t
}

// OutcomeVia is Outcome for a question the front end via asked
// (rules.Flow.Via): a SOCKS client is refused with a reply code, not a
// page.
func OutcomeVia(via string, l rules.Layer, a rules.Action, p *rules.Params) string {
	if via == "socks" {
		switch a {
		case rules.ActionReject:
			return "SOCKS refused (not allowed by ruleset)"
		case rules.ActionSinkhole:
			return "SOCKS host unreachable"
		}
	}
	return Outcome(l, a, p)
}

// Outcome says what a device sees when action a with parameters p acts at
// layer l, in a few words for the event list.
func Outcome(l rules.Layer, a rules.Action, p *rules.Params) string {
	if p == nil {
		p = &rules.Params{}
	}
	switch a {
	case rules.ActionAllow:
		return "allowed"
	case rules.ActionReject:
		switch l {
		case rules.LayerDNS:
			return strings.ToUpper(p.RCode.String())
		case rules.LayerHTTP:
			return "403 page"
		case rules.LayerUDP:
			return "port unreachable"
		}
		return "connection reset"
	case rules.ActionBlackhole:
		if l == rules.LayerDNS {
			return "no answer"
		}
		return "no answer (connection held)"
	case rules.ActionSinkhole:
		switch l {
		case rules.LayerDNS:
			return "0.0.0.0"
		case rules.LayerHTTP:
			return "502 page"
		}
		return "connected nowhere"
	case rules.ActionSpoof:
		return "spoofed to " + joinAddrs(p.Addrs)
	case rules.ActionDelay:
		if p.Jitter > 0 {
			return fmt.Sprintf("delayed %s ±%s", p.Latency, p.Jitter)
		}
		return "delayed " + p.Latency.String()
	case rules.ActionThrottle:
		return "throttled to " + rate(p.Rate)
	case rules.ActionCut:
		switch {
		case p.AfterBytes > 0 && p.After > 0:
			return fmt.Sprintf("cut after %d bytes or %s", p.AfterBytes, p.After)
		case p.AfterBytes > 0:
			return fmt.Sprintf("cut after %d bytes", p.AfterBytes)
		}
		return "cut after " + p.After.String()
	case rules.ActionTLSReset:
		if p.Close == rules.CloseAlert {
			return "TLS alert after the ClientHello"
		}
		return "connection reset after the ClientHello"
	case rules.ActionStall:
		return fmt.Sprintf("stalled after %d bytes", p.AfterBytes)
	case rules.ActionSlowClose:
		return "closed " + p.Latency.String() + " late"
	case rules.ActionTruncate:
		return "truncated (TC bit): retry over TCP"
	case rules.ActionHTTPError:
		return fmt.Sprintf("HTTP %d", p.Status)
	case rules.ActionRPCError:
		return fmt.Sprintf("JSON-RPC error %d", p.RPCCode)
	case rules.ActionTLSFail:
		if p.TLSFailure == rules.TLSAlert {
			return "TLS handshake failure"
		}
		return "bad certificate (" + strings.ReplaceAll(p.TLSFailure.String(), "_", " ") + ")"
	}
	return a.String()
}

func joinAddrs(as []netip.Addr) string {
	s := make([]string, len(as))
	for i, a := range as {
		s[i] = a.String()
	}
	return strings.Join(s, ", ")
}

func rate(bps int64) string {
	switch {
	case bps >= 1<<20 && bps%(1<<20) == 0:
		return fmt.Sprintf("%d MiB/s", bps>>20)
	case bps >= 1<<10 && bps%(1<<10) == 0:
		return fmt.Sprintf("%d KiB/s", bps>>10)
	}
	return fmt.Sprintf("%d B/s", bps)
}
