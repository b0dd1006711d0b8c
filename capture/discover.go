package capture

import (
	"fmt"
	"io"
	"net/netip"
	"sort"
	"strings"

	"golang.org/x/net/publicsuffix"
)

// Catalogue is a proposed service catalogue: what the devices of a capture
// contacted, grouped into services by registrable domain, plus the
// addresses they dialed without a name.
type Catalogue struct {
	Services []*Proposed
}

// Proposed is one proposed service.
type Proposed struct {
	Name    string
	Domains []string // registrable domains (match every subdomain)
	Names   []string // the names seen, for the comment
	IPs     []string // addresses dialed without a name
	Ports   []string // ports seen, e.g. 443/tcp
	Flows   int      // flows and DNS questions seen
	Devices int
}

// Discover proposes a catalogue from what the devices of the capture
// contacted. DNS traffic to resolvers and reverse lookups are left out.
func (a *Analyzer) Discover() *Catalogue {
	type acc struct {
		p       *Proposed
		names   map[string]bool
		ports   map[string]bool
		ips     map[string]bool
		devices map[netip.Addr]bool
	}
	byKey := map[string]*acc{}
	get := func(key string) *acc {
		x := byKey[key]
		if x == nil {
			x = &acc{p: &Proposed{}, names: map[string]bool{}, ports: map[string]bool{}, ips: map[string]bool{}, devices: map[netip.Addr]bool{}}
			byKey[key] = x
		}
		return x
	}
	addName := func(name string, dev netip.Addr) *acc {
		if name == "" || strings.HasSuffix(name, ".arpa") || !strings.Contains(name, ".") {
			return nil
		}
		dom, err := publicsuffix.EffectiveTLDPlusOne(name)
		if err != nil {
			dom = name
		}
		x := get("d:" + dom)
		x.p.Domains = []string{dom}
		x.names[name] = true
		x.devices[dev] = true
		x.p.Flows++
		return x
	}
	for _, q := range a.queries {
		addName(q.name, q.client)
	}
	for _, f := range a.order {
		k := f.key
		if k.dport == 53 || f.pktsOut == 0 {
			continue
		}
		port := fmt.Sprintf("%d/%s", k.dport, k.proto)
		if x := addName(f.name, k.src); x != nil {
			x.ports[port] = true
			continue
		}
		// Dialed by address: one service per /24 (IPv4) or /48 (IPv6), the
		// way a fleet of nodes usually sits.
		bits := 24
		if k.dst.Is6() {
			bits = 48
		}
		pfx, _ := k.dst.Prefix(bits)
		x := get("a:" + pfx.String())
		x.p.Name = "nodes-" + strings.NewReplacer(".", "-", ":", "-", "/", "-").Replace(strings.TrimSuffix(pfx.String(), "/"+fmt.Sprint(bits)))
		x.ips[k.dst.String()] = true
		x.ports[port] = true
		x.devices[k.src] = true
		x.p.Flows++
	}
	c := &Catalogue{}
	for _, x := range byKey {
		p := x.p
		if len(p.Domains) > 0 {
			p.Name = serviceName(p.Domains[0])
		}
		p.Names = sortedKeys(x.names)
		p.IPs = sortedKeys(x.ips)
		p.Ports = sortedKeys(x.ports)
		sort.SliceStable(p.Ports, func(i, j int) bool { return portNum(p.Ports[i]) < portNum(p.Ports[j]) })
		p.Devices = len(x.devices)
		c.Services = append(c.Services, p)
	}
	sort.Slice(c.Services, func(i, j int) bool {
		a, b := c.Services[i], c.Services[j]
		if a.Flows != b.Flows {
			return a.Flows > b.Flows
		}
		return a.Name < b.Name
	})
	// Names must be unique: two domains could map to the same name.
	seen := map[string]int{}
	for _, p := range c.Services {
		seen[p.Name]++
		if n := seen[p.Name]; n > 1 {
			p.Name = fmt.Sprintf("%s-%d", p.Name, n)
		}
	}
	return c
}

// serviceName makes a service name of a domain: "infura.io" -> "infura".
func serviceName(dom string) string {
	if i := strings.IndexByte(dom, '.'); i > 0 {
		return strings.ReplaceAll(dom[:i], "_", "-")
	}
	return dom
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// WriteYAML writes the catalogue as a rule file: the services, and an
// optional scenario named scenario that allows each of them, for the team
// to turn into reject or blackhole rules. `unicorn rules check` accepts it.
func (c *Catalogue) WriteYAML(w io.Writer, source, scenario string) error {
	ew := &errWriter{w: w}
	fmt.Fprintf(ew, "# Services the devices in %s contacted, proposed by `unicorn discover`.\n", source)
	fmt.Fprintln(ew, "# Names are grouped by registrable domain (a domain covers its subdomains);")
	fmt.Fprintln(ew, "# addresses dialed without a name are grouped per /24 (IPv4) or /48 (IPv6).")
	fmt.Fprintln(ew, "# Review them: rename services, merge or split them, drop what is not yours.")
	if len(c.Services) == 0 {
		fmt.Fprintln(ew, "# The capture holds no flows from a device: nothing to propose.")
		fmt.Fprintln(ew, "services: {}")
		return ew.err
	}
	fmt.Fprintln(ew, "services:")
	for _, p := range c.Services {
		fmt.Fprintf(ew, "  %s:\n", p.Name)
		fmt.Fprintf(ew, "    # %d flows and questions from %d device(s)", p.Flows, p.Devices)
		if len(p.Ports) > 0 {
			fmt.Fprintf(ew, "; ports %s", strings.Join(p.Ports, ", "))
		}
		fmt.Fprintln(ew)
		if len(p.Domains) > 0 {
			fmt.Fprintf(ew, "    # names seen: %s\n", strings.Join(p.Names, ", "))
			fmt.Fprintf(ew, "    domains: [%s]\n", strings.Join(p.Domains, ", "))
			continue
		}
		fmt.Fprintf(ew, "    ips: [%s]\n", strings.Join(p.IPs, ", "))
		fmt.Fprintf(ew, "    ports: [%s]\n", strings.Join(p.Ports, ", "))
	}
	fmt.Fprintln(ew)
	fmt.Fprintf(ew, "# A starting scenario: active only when named (--scenario %s).\n", scenario)
	fmt.Fprintln(ew, "# Change allow to reject (fail fast) or blackhole (hang) for the services to cut.")
	fmt.Fprintf(ew, "scenario: %s\n", scenario)
	fmt.Fprintf(ew, "description: %q\n", "services discovered in "+source)
	fmt.Fprintln(ew, "optional: true")
	fmt.Fprintln(ew, "rules:")
	for _, p := range c.Services {
		fmt.Fprintf(ew, "  - {service: %s, action: allow}\n", p.Name)
	}
	return ew.err
}

func portNum(s string) int {
	n := 0
	for _, c := range s {
		if c < '0' || c > '9' {
			break
		}
		n = n*10 + int(c-'0')
	}
	return n
}
