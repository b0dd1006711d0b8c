package main

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/chaos-unicorn/unicorn/rules"
	"github.com/urfave/cli/v2"
)

func explainCommand() *cli.Command {
	return &cli.Command{
		Name:      "explain",
		Usage:     "say which scenario and rule decide a target, and what a device will see",
		ArgsUsage: "TARGET",
		Description: `TARGET is a name (mainnet.infura.io), name:port, an address (47.91.156.93),
address:port, or either with /udp or /tcp (206.189.243.57:30404/udp; [2001:db8::1]:443).
Without a port, the HTTP and TCP layers are shown for port 443.
With --remote, a running unicorn answers with the rules and switches in
force there (--control, --token as for unicorn scenario).`,
		Flags: append(append(ruleFlags(), &cli.StringFlag{
			Name:  "client",
			Usage: "explain for the device at `IP` (rules with clients: and device-scoped switches depend on it)",
		}, &cli.BoolFlag{
			Name:  "remote",
			Usage: "ask the running unicorn at --control instead of loading the rules here",
		}), clientFlags()...),
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return cli.Exit("unicorn explain: give one TARGET, e.g. mainnet.infura.io or 47.91.156.93:443", 2)
			}
			t, err := parseTarget(c.Args().First())
			if err != nil {
				return cli.Exit("unicorn explain: "+err.Error(), 2)
			}
			if s := c.String("client"); s != "" {
				if t.client, err = netip.ParseAddr(s); err != nil {
					return cli.Exit(fmt.Sprintf("unicorn explain: --client %q is not an IP address", s), 2)
				}
			}
			if c.Bool("remote") {
				return explainRemote(c, c.Args().First(), c.String("client"))
			}
			e, err := newEngine(c)
			if err != nil {
				return err
			}
			explain(c.App.Writer, e, t)
			return nil
		},
	}
}

// target is what explain was asked about.
type target struct {
	host   string
	addr   netip.Addr
	port   uint16
	proto  rules.Proto
	client netip.Addr
}

// parseTarget parses name, name:port, address, address:port, [v6]:port,
// each with an optional /tcp or /udp.
func parseTarget(s string) (target, error) {
	var t target
	spec := s
	if i := strings.LastIndexByte(spec, '/'); i >= 0 {
		switch strings.ToLower(spec[i+1:]) {
		case "tcp":
			t.proto = rules.ProtoTCP
		case "udp":
			t.proto = rules.ProtoUDP
		default:
			return t, fmt.Errorf("%q: protocol must be /tcp or /udp", s)
		}
		spec = spec[:i]
	}
	host, portStr := spec, ""
	if a, err := netip.ParseAddr(spec); err == nil { // a bare address, IPv6 included
		t.addr = a
	} else {
		if i := strings.LastIndexByte(spec, ':'); i >= 0 {
			host, portStr = spec[:i], spec[i+1:]
		}
		host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
		if a, err := netip.ParseAddr(host); err == nil {
			t.addr = a
		} else if host == "" || strings.ContainsAny(host, " /:[]") {
			return t, fmt.Errorf("%q is not a name or address (want e.g. mainnet.infura.io, 47.91.156.93:443 or [2001:db8::1]:443/udp)", s)
		} else {
			t.host = strings.ToLower(host)
		}
	}
	if portStr != "" {
		p, err := strconv.ParseUint(portStr, 10, 16)
		if err != nil || p == 0 {
			return t, fmt.Errorf("%q: %q is not a port", s, portStr)
		}
		t.port = uint16(p)
	}
	return t, nil
}

func explain(w io.Writer, e *rules.Engine, t target) {
	var names []string
	for _, sc := range e.Active() {
		names = append(names, sc.Name)
	}
	active := strings.Join(names, ", ")
	if active == "" {
		active = "none"
	}
	port, portNote := t.port, ""
	if port == 0 {
		port, portNote = 443, " (port 443 assumed)"
	}
	what := t.host
	if what == "" {
		what = t.addr.String()
	}
	if t.port != 0 {
		what = net.JoinHostPort(what, strconv.Itoa(int(t.port)))
	}
	if t.proto != rules.ProtoAny {
		what += "/" + t.proto.String()
	}
	fmt.Fprintf(w, "target    %s%s\nscenarios %s\n", what, portNote, active)
	if t.client.IsValid() {
		fmt.Fprintf(w, "client    %s\n", t.client)
	}
	fmt.Fprintln(w)
	show := func(layer string, f rules.Flow) {
		// Rules with first:, every: or probability: act on some flows and
		// pass the others on: show each candidate, then what the rest get.
		for i, d := range e.Candidates(f) {
			if i == 0 {
				fmt.Fprintf(w, "%-5s %s\n", layer, d)
			} else {
				fmt.Fprintf(w, "      otherwise: %s\n", d)
			}
			if d.Rule != nil && d.Rule.Service != "" {
				fmt.Fprintf(w, "      service %s\n", d.Rule.Service)
			}
			if d.Rule != nil && d.Rule.Modifiers != nil {
				fmt.Fprintf(w, "      when: %s\n", d.Rule.Modifiers)
				if st := e.RuleState(d.Rule); st != "" {
					fmt.Fprintf(w, "      now: %s\n", st)
				}
			}
			fmt.Fprintf(w, "      a device sees: %s\n", seen(f.Layer, d))
			if d.Rule != nil && d.Action != rules.ActionAllow && f.Layer != rules.LayerDNS {
				fmt.Fprintf(w, "      open connections when switched on: %s\n", d.OnExisting())
			}
		}
		for _, r := range e.Waiting(f) {
			fmt.Fprintf(w, "      not now: %s: %s; %s\n", r.Ref(), r.Modifiers, e.RuleState(r))
		}
	}
	if t.host != "" {
		show("DNS", rules.Flow{Client: t.client, Layer: rules.LayerDNS, Host: t.host})
	} else {
		fmt.Fprintf(w, "DNS   no name: only address and port rules apply; a device reaching %s by address asks no DNS\n", t.addr)
	}
	if t.proto == rules.ProtoUDP {
		show("UDP", rules.Flow{Client: t.client, Layer: rules.LayerUDP, Host: t.host, Addr: t.addr, Port: port, Proto: rules.ProtoUDP})
		fmt.Fprintln(w, "\nUDP reaches unicorn only in router mode; the HTTP proxy carries TCP.")
		return
	}
	show("HTTP", rules.Flow{Client: t.client, Layer: rules.LayerHTTP, Host: t.host, Addr: t.addr, Port: port, Proto: rules.ProtoTCP})
	show("TCP", rules.Flow{Client: t.client, Layer: rules.LayerTCP, Host: t.host, Addr: t.addr, Port: port, Proto: rules.ProtoTCP})
	if t.host != "" {
		fmt.Fprintln(w, "\nAddress and port rules also apply to the addresses the name resolves to.")
	}
}

// seen says in a tester's words what a decision does at a layer.
func seen(l rules.Layer, d rules.Decision) string {
	p := d.Params()
	switch d.Action {
	case rules.ActionAllow:
		switch l {
		case rules.LayerDNS:
			return "the real answer, forwarded to the upstream resolvers"
		case rules.LayerHTTP:
			return "the real site, relayed by the proxy"
		}
		return "the connection relayed untouched"
	case rules.ActionReject:
		switch l {
		case rules.LayerDNS:
			return fmt.Sprintf("%s with an SOA (TTL %s) and an Extended DNS Error naming the rule", strings.ToUpper(p.RCode.String()), p.TTL)
		case rules.LayerHTTP:
			return "plain HTTP: a 403 page naming scenario and rule; HTTPS (CONNECT): 403, the tunnel is refused at once"
		}
		if l == rules.LayerUDP {
			return "ICMP port unreachable (router mode)"
		}
		return "the connection refused (TCP RST) at once"
	case rules.ActionBlackhole:
		if l == rules.LayerDNS {
			return "no answer: the lookup times out"
		}
		return "silence: the connection hangs until the client gives up"
	case rules.ActionSinkhole:
		if l == rules.LayerDNS {
			return fmt.Sprintf("0.0.0.0 / :: (TTL %s); other record types empty", p.TTL)
		}
		return "502 naming the rule: the address leads nowhere"
	case rules.ActionSpoof:
		if l == rules.LayerDNS {
			return fmt.Sprintf("the addresses %v (TTL %s)", p.Addrs, p.TTL)
		}
		return fmt.Sprintf("a connection to %v instead", p.Addrs)
	case rules.ActionDelay:
		switch {
		case p.DelayOn == rules.DelayOnConnect:
			return fmt.Sprintf("the real answer, %s late (jitter %s)", p.Latency, p.Jitter)
		case l == rules.LayerDNS:
			return "the real answer, on time (the rule delays the bytes of connections)"
		case p.DelayOn == rules.DelayOnFirstByte:
			return fmt.Sprintf("the first byte of each connection (%s) %s late (jitter %s), then full speed", p.Direction, p.Latency, p.Jitter)
		}
		return fmt.Sprintf("every chunk of bytes (%s) %s late (jitter %s)", p.Direction, p.Latency, p.Jitter)
	case rules.ActionThrottle:
		return fmt.Sprintf("the connection at %d bytes/s (%s)", p.Rate, p.Direction)
	case rules.ActionCut:
		var when []string
		if p.AfterBytes > 0 {
			when = append(when, fmt.Sprintf("after %d bytes (%s)", p.AfterBytes, p.Direction))
		}
		if p.After > 0 {
			when = append(when, fmt.Sprintf("%s after it opened", p.After))
		}
		how := "closed"
		if p.Close == rules.CloseRST {
			how = "reset (RST)"
		}
		return fmt.Sprintf("the connection %s %s", how, strings.Join(when, " or "))
	case rules.ActionStall:
		return fmt.Sprintf("silence after %d bytes (%s) on a connection that stays open", p.AfterBytes, p.Direction)
	case rules.ActionSlowClose:
		if p.AfterBytes > 0 {
			return fmt.Sprintf("silence after %d bytes (%s), then a close %s later", p.AfterBytes, p.Direction, p.Latency)
		}
		return fmt.Sprintf("the end of the connection (%s) arrives %s late", p.Direction, p.Latency)
	case rules.ActionTLSReset:
		if p.Close == rules.CloseAlert {
			return "the tunnel opens, then a TLS handshake_failure alert answers the ClientHello naming it (SNI)"
		}
		return "the tunnel opens, then a TCP reset answers the ClientHello naming it (SNI)"
	case rules.ActionTruncate:
		if l == rules.LayerDNS {
			return "over UDP an empty answer with TC set; the retry over TCP gets the real answer"
		}
	}
	return fmt.Sprintf("%s (applied by a later layer)", d.Action)
}
