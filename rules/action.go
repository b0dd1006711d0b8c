package rules

import (
	"math/rand/v2"
	"net/http"
	"net/netip"
	"strings"
	"time"
)

// Action is one of the closed set of things unicorn can do to a flow. Each
// action means the same thing at every layer; see DESIGN.md for the table.
type Action uint8

// The actions. ActionAllow is the zero value: a flow no rule matched.
const (
	ActionAllow     Action = iota // forward / relay untouched
	ActionReject                  // fail fast: NXDOMAIN (or Params.RCode), 403/502, RST
	ActionBlackhole               // hang: no answer, silence until the client gives up
	ActionSinkhole                // answer 0.0.0.0 / :: ; connect nowhere
	ActionSpoof                   // answer or dial Params.Addrs instead
	ActionDelay                   // add Params.Latency (+ Params.Jitter)
	ActionThrottle                // limit to Params.Rate bytes per second
	ActionCut                     // close after Params.AfterBytes or Params.After
	ActionHTTPError               // answer with Params.Status, Headers, Body
	ActionRPCError                // JSON-RPC error Params.RPCCode for Params.RPCMethods
	ActionTLSFail                 // present a bad certificate of kind Params.TLSFailure
	numActions
)

var actionNames = [numActions]string{
	"allow", "reject", "blackhole", "sinkhole", "spoof", "delay", "throttle",
	"cut", "http_error", "rpc_error", "tls_fail",
}

func (a Action) String() string {
	if a < numActions {
		return actionNames[a]
	}
	return "unknown"
}

// ParseAction returns the Action called name.
func ParseAction(name string) (Action, bool) {
	for i, n := range actionNames {
		if n == name {
			return Action(i), true
		}
	}
	return 0, false
}

// ActionNames lists the valid action names, for help texts and errors.
func ActionNames() string { return strings.Join(actionNames[:], ", ") }

// Blocking reports whether the action stops the flow from reaching its
// destination at all.
func (a Action) Blocking() bool {
	switch a {
	case ActionReject, ActionBlackhole, ActionSinkhole:
		return true
	}
	return false
}

// AppliesTo reports whether the action has a meaning at layer l. A rule whose
// action has no meaning at a layer is skipped there, so that a later layer
// can apply it: an http_error rule lets the DNS question through.
func (a Action) AppliesTo(l Layer) bool {
	switch a {
	case ActionHTTPError, ActionRPCError:
		return l == LayerHTTP
	case ActionTLSFail:
		return l == LayerHTTP || l == LayerTLS
	case ActionThrottle, ActionCut:
		return l != LayerDNS
	}
	return true
}

// RCode is a DNS response code a reject rule can ask for. RCodeNoData is not
// a wire rcode: it means NOERROR with an empty answer section.
type RCode uint8

// The rcodes a reject rule can ask for.
const (
	RCodeNXDomain RCode = iota // the default
	RCodeServFail
	RCodeRefused
	RCodeNoData
)

var rcodeNames = [...]string{"nxdomain", "servfail", "refused", "nodata"}

func (r RCode) String() string { return rcodeNames[r] }

// TLSFailure is the kind of bad certificate a tls_fail rule presents.
type TLSFailure uint8

// The tls_fail variants.
const (
	TLSUntrusted TLSFailure = iota // signed by an unknown issuer (the default)
	TLSExpired
	TLSSelfSigned
	TLSWrongName
	TLSAlert // a handshake_failure alert, no certificate at all
)

var tlsFailureNames = [...]string{"untrusted", "expired", "self_signed", "wrong_name", "alert"}

func (t TLSFailure) String() string { return tlsFailureNames[t] }

// Params are an action's parameters, parsed and validated once by the
// loader. Only the fields the rule's action uses are set; the others are
// zero. Front ends read them and never parse strings.
type Params struct {
	// RCode is what a reject rule answers at the DNS layer.
	RCode RCode
	// TTL is the TTL of synthesized DNS answers (reject, sinkhole, spoof).
	// The loader sets it to DefaultBlockTTL when the rule names none.
	TTL time.Duration
	// Addrs are the addresses spoof answers with and dials instead.
	Addrs []netip.Addr
	// Latency and Jitter are the added delay of a delay rule.
	Latency, Jitter time.Duration
	// Rate is a throttle rule's limit in bytes per second.
	Rate int64
	// AfterBytes and After say when a cut rule closes the flow; a zero
	// value is not a trigger.
	AfterBytes int64
	After      time.Duration
	// Status, Headers and Body are what an http_error rule answers.
	Status  int
	Headers http.Header
	Body    string
	// RPCCode, RPCMessage and RPCMethods describe an rpc_error rule; an
	// empty RPCMethods matches every method.
	RPCCode    int
	RPCMessage string
	RPCMethods []string
	// TLSFailure is the kind of certificate a tls_fail rule presents.
	TLSFailure TLSFailure

	rnd *stream // the engine's seeded source for this rule; nil: math/rand
}

// Delay is a delay rule's wait: Latency plus a uniform draw from
// [-Jitter, +Jitter], never below zero. Every front end waits this long.
// For the Params of an engine's Decision the draw comes from the engine's
// seeded source (see Engine.SetSeed), the rule's next one.
func (p *Params) Delay() time.Duration {
	d := p.Latency
	if p.Jitter > 0 {
		if p.rnd != nil {
			d += time.Duration(p.rnd.next()%uint64(2*p.Jitter+1)) - p.Jitter
		} else {
			d += rand.N(2*p.Jitter+1) - p.Jitter
		}
	}
	return max(d, 0)
}

// DefaultBlockTTL is the TTL of blocked DNS answers unless a rule says
// otherwise: short, so devices recover quickly when a scenario ends.
const DefaultBlockTTL = 60 * time.Second
