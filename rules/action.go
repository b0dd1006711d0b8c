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
	ActionSlowClose               // hold a close (or the flow after Params.AfterBytes) for Params.Latency, then close
	ActionStall                   // stop forwarding after Params.AfterBytes, keep the socket open
	ActionTLSReset                // RST or alert right after the ClientHello, by SNI
	ActionTruncate                // DNS over UDP: an empty reply with TC set, so the client retries over TCP
	numActions
)

var actionNames = [numActions]string{
	"allow", "reject", "blackhole", "sinkhole", "spoof", "delay", "throttle",
	"cut", "http_error", "rpc_error", "tls_fail", "slow_close", "stall", "tls_reset",
	"truncate",
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
	case ActionThrottle, ActionCut, ActionSlowClose, ActionStall:
		return l != LayerDNS
	case ActionTLSReset:
		// Decided on the CONNECT's name at the HTTP layer, then on the
		// ClientHello's SNI at the TLS layer.
		return l == LayerHTTP || l == LayerTLS
	case ActionTruncate:
		return l == LayerDNS
	}
	return true
}

// ByteFault reports whether the action acts on the bytes of a relayed
// connection (proxy/fault applies it): delay (on first_byte or chunk),
// throttle, cut, slow_close and stall.
func (a Action) ByteFault() bool {
	switch a {
	case ActionDelay, ActionThrottle, ActionCut, ActionSlowClose, ActionStall:
		return true
	}
	return false
}

// Direction says which way of a relayed connection a byte fault acts on.
// It is a bit set: DirBoth is DirUp|DirDown.
type Direction uint8

// The directions. Up is from the device to the upstream, down is back.
const (
	DirUp   Direction = 1 << iota // device -> upstream
	DirDown                       // upstream -> device
	DirBoth = DirUp | DirDown
)

func (d Direction) String() string {
	switch d {
	case DirUp:
		return "up"
	case DirDown:
		return "down"
	case DirBoth:
		return "both"
	}
	return "none"
}

var directionNames = map[string]Direction{"up": DirUp, "down": DirDown, "both": DirBoth}

// DelayOn says when a delay rule waits.
type DelayOn uint8

// The delay triggers. DelayOnConnect is the zero value and the default.
const (
	DelayOnConnect   DelayOn = iota // before connecting (DNS: before answering)
	DelayOnFirstByte                // before the first chunk in each direction asked
	DelayOnChunk                    // before every chunk in each direction asked
)

var delayOnNames = [...]string{"connect", "first_byte", "chunk"}

func (o DelayOn) String() string { return delayOnNames[o] }

// CloseMode is how a cut or tls_reset rule ends a connection.
type CloseMode uint8

// The close modes. The zero value is each action's default: a cut closes
// (FIN), a tls_reset resets (RST).
const (
	CloseDefault CloseMode = iota
	CloseFIN               // an orderly close
	CloseRST               // a TCP reset
	CloseAlert             // a TLS handshake_failure alert, then a close
)

var closeModeNames = [...]string{"", "close", "rst", "alert"}

func (m CloseMode) String() string { return closeModeNames[m] }

// OnExisting says what a rule does to connections already open when its
// scenario is switched on (or the rules change) and the rule now decides
// them.
type OnExisting uint8

// The on_existing choices. OnExistingDefault resolves by action (Decision.OnExisting).
const (
	OnExistingDefault OnExisting = iota
	OnExistingKeep               // leave the connection as it was
	OnExistingCut                // close it at once
	OnExistingDegrade            // apply the rule's byte fault from now on
)

var onExistingNames = [...]string{"", "keep", "cut", "degrade"}

func (o OnExisting) String() string { return onExistingNames[o] }

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
	// value is not a trigger. AfterBytes is also where stall and
	// slow_close stop forwarding (0: at once for stall; at the end of the
	// stream for slow_close).
	AfterBytes int64
	After      time.Duration
	// Direction is the way a byte fault acts on (throttle, cut, stall,
	// slow_close: both by default; delay on first_byte or chunk: down).
	Direction Direction
	// DelayOn is when a delay rule waits.
	DelayOn DelayOn
	// Close is how cut (close or rst) and tls_reset (rst or alert) end a
	// connection; the loader sets each action's default.
	Close CloseMode
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
