package rules

import (
	"fmt"
	"net/netip"
	"strings"
)

// Layer is the protocol layer at which a front end asks about a flow.
type Layer uint8

// The layers a Flow can be seen at.
const (
	LayerDNS  Layer = iota + 1 // a DNS question for Flow.Host
	LayerHTTP                  // a plain HTTP proxy request, or a CONNECT before any byte is relayed
	LayerTLS                   // a TLS ClientHello (SNI in Flow.Host)
	LayerTCP                   // a TCP connection to Flow.Addr:Flow.Port
	LayerUDP                   // a UDP flow to Flow.Addr:Flow.Port
)

var layerNames = [...]string{"", "dns", "http", "tls", "tcp", "udp"}

func (l Layer) String() string {
	if int(l) < len(layerNames) && l != 0 {
		return layerNames[l]
	}
	return fmt.Sprintf("layer(%d)", uint8(l))
}

// Proto is a transport protocol. The zero value means "not known" and
// matches port rules written without /tcp or /udp only.
type Proto uint8

// The transport protocols a port rule can name.
const (
	ProtoAny Proto = iota
	ProtoTCP
	ProtoUDP
)

func (p Proto) String() string {
	switch p {
	case ProtoTCP:
		return "tcp"
	case ProtoUDP:
		return "udp"
	}
	return "any"
}

// Flow is the question every front end asks the Engine: what happens to
// this connection, request or DNS question? Zero fields mean "not known".
type Flow struct {
	// Client is the device's address. OPTIONAL; rules with clients: never
	// match a flow whose client is unknown.
	Client netip.Addr
	// Layer is where the flow is seen. MANDATORY.
	Layer Layer
	// Host is the name the device asked for (DNS question, Host header,
	// CONNECT authority, SNI), in any letter case, with or without the
	// trailing dot. OPTIONAL.
	Host string
	// Addr is the destination address. OPTIONAL.
	Addr netip.Addr
	// Port is the destination port; 0 means not known, and then port
	// constraints do not apply (a DNS question has no target port).
	Port uint16
	// Proto is the transport protocol of Port.
	Proto Proto
	// Via names the front end that asks when it is not the one the
	// layer suggests ("socks" for a SOCKS5 CONNECT, asked as a CONNECT
	// at LayerHTTP), so that events say what the device got. Rules never
	// match on it. OPTIONAL.
	Via string

	// Method, Path and Header describe an HTTP request, at LayerHTTP only:
	// a plain proxy request or one decrypted from an intercepted CONNECT.
	// OPTIONAL; rules with methods:, paths: or request_headers: never
	// match a flow where what they ask about is not known (a CONNECT, a
	// DNS question, a TCP connection).
	//
	// Method is the request method ("" not known).
	Method string
	// Path is the request's URL path, without the query ("" not known).
	Path string
	// Header returns the request's value of a header, "" if absent; nil
	// means the headers are not known. Names are passed in canonical form.
	Header func(name string) string
	// RPCMethods returns the JSON-RPC method names the request's body
	// calls (every element of a batch), or nil when it is not JSON-RPC. It
	// may read the body, so it is called only when a rule asks. OPTIONAL:
	// nil means unknown, and rules with jsonrpc: do not match.
	RPCMethods func() []string
}

func (f Flow) String() string {
	var b strings.Builder
	b.WriteString(f.Layer.String())
	b.WriteByte(' ')
	target := f.Host
	if target == "" && f.Addr.IsValid() {
		target = f.Addr.String()
	}
	b.WriteString(target)
	if f.Port != 0 {
		fmt.Fprintf(&b, ":%d", f.Port)
		if f.Proto != ProtoAny {
			b.WriteString("/" + f.Proto.String())
		}
	}
	if f.Client.IsValid() {
		b.WriteString(" from " + f.Client.String())
	}
	return b.String()
}
