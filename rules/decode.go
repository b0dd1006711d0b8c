package rules

import (
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

var (
	fileKeys    = []string{"scenario", "description", "optional", "services", "devices", "rules"}
	serviceKeys = []string{"description", "domains", "hosts", "regex", "ips", "ports", "include"}
	// A rule either names a service or lists the service's fields inline.
	ruleKeys = append(append([]string{"service", "action", "clients", "description", "on_existing"},
		append(serviceKeys[1:], contentKeys...)...), append(paramKeys(), modifierKeys...)...)
)

// pendingRule is a rule whose service and client references are resolved
// once every file of the set is read.
type pendingRule struct {
	rule        *Rule
	path        string
	serviceNode *yaml.Node   // the service: value, if any
	clientNodes []*yaml.Node // the clients: items
	clientsPath string
}

// decodeFile decodes one YAML document into the loader's set.
func (ld *loader) decodeFile(file string, data []byte) {
	d := &fileDecoder{file: file, errs: &ld.errs}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		ld.errs.add(Pos{File: file, Line: yamlErrLine(err)}, "", "not valid YAML: %s", strings.TrimPrefix(err.Error(), "yaml: "))
		return
	}
	if len(doc.Content) == 0 {
		ld.errs.add(Pos{File: file}, "", "file is empty (want a scenario: or services: mapping)")
		return
	}
	root := doc.Content[0]
	var sc *Scenario
	var rulesNode, servicesNode *yaml.Node
	d.fields(root, "", fileKeys, func(key string, v *yaml.Node, path string) {
		switch key {
		case "scenario":
			if name, ok := d.str(v, path); ok {
				sc = &Scenario{Name: name, Pos: d.pos(v)}
			}
		case "services":
			servicesNode = v
		case "devices":
			ld.decodeDevices(d, v, path)
		case "rules":
			rulesNode = v
		}
	})
	// Services come first: rules may use them, in this or other files.
	if servicesNode != nil {
		ld.decodeServices(d, servicesNode, "services")
	}
	if sc == nil {
		if rulesNode != nil {
			d.errf(rulesNode, "rules", "rules need a scenario: name in the same file")
		}
		return
	}
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		switch k.Value {
		case "description":
			sc.Description, _ = d.str(v, "description")
		case "optional":
			sc.Optional = d.bool(v, "optional")
		}
	}
	if prev := ld.set.Scenario(sc.Name); prev != nil {
		d.errs.add(sc.Pos, "scenario", "scenario %q is already defined at %s", sc.Name, prev.Pos)
		return
	}
	ld.set.Scenarios = append(ld.set.Scenarios, sc)
	if rulesNode == nil {
		d.errs.add(sc.Pos, "rules", "scenario %q has no rules", sc.Name)
		return
	}
	for i, rn := range d.list(rulesNode, "rules") {
		ld.decodeRule(d, sc, i, rn)
	}
}

func yamlErrLine(err error) int {
	var line int
	if _, e := fmt.Sscanf(strings.TrimPrefix(err.Error(), "yaml: "), "line %d:", &line); e == nil {
		return line
	}
	return 0
}

func (d *fileDecoder) bool(n *yaml.Node, path string) bool {
	s, ok := d.scalar(n, path, "true or false")
	if !ok {
		return false
	}
	b, err := strconv.ParseBool(s)
	if err != nil {
		d.errf(n, path, "%q is not true or false", s)
	}
	return b
}

func (ld *loader) decodeDevices(d *fileDecoder, n *yaml.Node, path string) {
	if n.Kind != yaml.MappingNode {
		d.errf(n, path, "want a mapping of group names to address lists, got %s", kindName(n))
		return
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		p := join(path, k.Value)
		if _, dup := ld.set.Devices[k.Value]; dup {
			d.errf(k, p, "device group %q is defined twice", k.Value)
			continue
		}
		var ps []netip.Prefix
		d.strs(v, p, func(s string, n *yaml.Node, p string) {
			pre, err := ParsePrefix(s)
			if err != nil && isMAC(s) {
				d.errf(n, p, macMessage, s)
				return
			}
			if err != nil {
				d.errf(n, p, "%q is not an address or CIDR (want e.g. 192.0.2.0/28 or 2001:db8::7)", s)
				return
			}
			ps = append(ps, pre)
		})
		ld.set.Devices[k.Value] = ps
	}
}

func (ld *loader) decodeServices(d *fileDecoder, n *yaml.Node, path string) {
	if n.Kind != yaml.MappingNode {
		d.errf(n, path, "want a mapping of service names to services, got %s", kindName(n))
		return
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		p := join(path, k.Value)
		svc := &Service{Name: k.Value, Pos: d.pos(k)}
		before := len(d.errs.list)
		d.fields(v, p, serviceKeys, func(key string, v *yaml.Node, path string) {
			if key == "description" {
				svc.Description, _ = d.str(v, path)
				return
			}
			ld.decodeSelector(d, svc, key, v, path)
		})
		if prev, dup := ld.set.Services[svc.Name]; dup {
			d.errf(k, p, "service %q is already defined at %s", svc.Name, prev.Pos)
			continue
		}
		if !svc.selective() && len(svc.Ports) == 0 && len(d.errs.list) == before {
			d.errf(k, p, "service matches nothing (give domains, hosts, regex, ips, ports or include)")
		}
		ld.set.Services[svc.Name] = svc
	}
}

// decodeSelector decodes one of the match fields a service (or an inline
// rule) can have.
func (ld *loader) decodeSelector(d *fileDecoder, svc *Service, key string, v *yaml.Node, path string) {
	switch key {
	case "domains", "hosts":
		list := &svc.domains
		if key == "hosts" {
			list = &svc.hosts
		}
		d.strs(v, path, func(s string, n *yaml.Node, p string) {
			if err := list.addName([]byte(s)); err != nil {
				d.errf(n, p, "%v", err)
			}
		})
	case "regex":
		d.strs(v, path, func(s string, n *yaml.Node, p string) {
			// Names are matched case-insensitively everywhere.
			re, err := regexp.Compile("(?i)" + s)
			if err != nil {
				d.errf(n, p, "%q is not a regular expression: %v", s, strings.TrimPrefix(err.Error(), "error parsing regexp: "))
				return
			}
			svc.Regex = append(svc.Regex, re)
		})
	case "ips":
		d.strs(v, path, func(s string, n *yaml.Node, p string) {
			pre, err := ParsePrefix(s)
			if err != nil {
				d.errf(n, p, "%q is not an address or CIDR (want e.g. 198.51.100.10, 203.0.113.0/24 or 2001:db8::/48)", s)
				return
			}
			svc.Prefixes = append(svc.Prefixes, pre)
		})
	case "ports":
		d.strs(v, path, func(s string, n *yaml.Node, p string) {
			r, err := ParsePortRange(s)
			if err != nil {
				d.errf(n, p, "%v", err)
				return
			}
			svc.Ports = append(svc.Ports, r)
		})
	case "include":
		d.strs(v, path, func(s string, n *yaml.Node, p string) {
			ld.include(d, svc, s, d.pos(n), p)
		})
	}
}

func (ld *loader) decodeRule(d *fileDecoder, sc *Scenario, i int, n *yaml.Node) {
	path := index("rules", i)
	r := &Rule{Scenario: sc.Name, Index: i, Pos: d.pos(n)}
	pr := &pendingRule{rule: r, path: path}
	var inline *Service
	var actionNode, existingNode *yaml.Node
	before := len(d.errs.list)
	params := map[string]*yaml.Node{}
	ok := d.fields(n, path, ruleKeys, func(key string, v *yaml.Node, p string) {
		switch key {
		case "service":
			pr.serviceNode = v
		case "action":
			actionNode = v
		case "description":
			d.str(v, p)
		case "on_existing":
			existingNode = v
		case "clients":
			pr.clientsPath = p
			pr.clientNodes = d.list(v, p)
		case "domains", "hosts", "regex", "ips", "ports", "include":
			if inline == nil {
				inline = &Service{Pos: d.pos(n)}
			}
			ld.decodeSelector(d, inline, key, v, p)
		case "methods", "paths", "request_headers":
			if r.http == nil {
				r.http = &httpMatch{}
			}
			decodeContent(d, r.http, key, v, p)
		default:
			params[key] = v
		}
	})
	if !ok {
		return
	}
	sc.Rules = append(sc.Rules, r)
	switch {
	case pr.serviceNode != nil && inline != nil:
		d.errf(n, path, "give either service: or inline match fields (domains, hosts, regex, ips, ports, include), not both")
	case inline != nil:
		r.svc = inline
		if !inline.selective() && len(inline.Ports) == 0 && !inlineErrs(d, before) {
			// An empty list must not turn the rule into a catch-all.
			d.errf(n, path, "the rule's match is empty (its lists hold no names, addresses or ports); "+
				"to match every flow on purpose, give no match fields at all")
		}
	}
	decodeModifiers(d, r, params, path)
	if pn := params["phases"]; pn != nil {
		delete(params, "phases")
		decodePhases(d, r, actionNode, pn, params, path)
	} else if actionNode == nil {
		d.errf(n, join(path, "action"), "missing (want one of %s or phases:)", ActionNames())
	} else if s, ok := d.str(actionNode, join(path, "action")); ok {
		a, ok := ParseAction(s)
		if !ok {
			d.errf(actionNode, join(path, "action"), "%q is not an action (want one of %s)", s, ActionNames())
		} else {
			r.Action = a
			if n := params["jsonrpc"]; n != nil && a != ActionRPCError {
				// For rpc_error, jsonrpc names the methods to fault; on any
				// other action it is a match field, like methods or paths.
				if r.http == nil {
					r.http = &httpMatch{}
				}
				decodeContent(d, r.http, "jsonrpc", n, join(path, "jsonrpc"))
				delete(params, "jsonrpc")
			}
			decodeParams(d, r, params, path)
			if a == ActionTLSFail && r.http != nil {
				d.errf(n, path, "tls_fail fails the handshake, before any request: it cannot match methods, paths, request_headers or jsonrpc")
			}
		}
	}
	decodeOnExisting(d, r, existingNode, join(path, "on_existing"))
	r.content = r.http != nil || r.Action == ActionHTTPError || r.Action == ActionRPCError || r.Action == ActionTLSFail ||
		(r.Modifiers != nil && r.Modifiers.needsContent())
	ld.pending = append(ld.pending, pr)
}

// inlineErrs reports whether errors were found since the count before, so
// that an inline match emptied by its own bad entries is not reported twice.
func inlineErrs(d *fileDecoder, before int) bool { return len(d.errs.list) > before }

// resolve ties rules to services and device groups once every file is read,
// so a scenario may use a catalogue file given after it.
func (ld *loader) resolve() {
	for _, pr := range ld.pending {
		r := pr.rule
		d := &fileDecoder{file: r.Pos.File, errs: &ld.errs}
		if n := pr.serviceNode; n != nil {
			if name, ok := d.str(n, join(pr.path, "service")); ok {
				if svc := ld.set.Services[name]; svc != nil {
					r.svc, r.Service = svc, name
				} else {
					d.errf(n, join(pr.path, "service"), "service %q is not defined (defined: %s)", name, sortedKeys(ld.set.Services))
				}
			}
		}
		for i, n := range pr.clientNodes {
			p := index(pr.clientsPath, i)
			s, ok := d.str(n, p)
			if !ok {
				continue
			}
			if group, ok := ld.set.Devices[s]; ok {
				r.clients = append(r.clients, group...)
				continue
			}
			pre, err := ParsePrefix(s)
			if err != nil && isMAC(s) {
				d.errf(n, p, macMessage, s)
				continue
			}
			if err != nil {
				d.errf(n, p, "%q is neither a device group nor an address or CIDR (groups: %s)", s, sortedKeys(ld.set.Devices))
				continue
			}
			r.clients = append(r.clients, pre)
		}
		if pr.clientNodes != nil && r.clients == nil {
			// An empty clients: list must not mean "every client".
			r.clients = []netip.Prefix{}
		}
	}
}

// macMessage refuses a MAC address among devices: or clients:. No front
// end matches a device's MAC (DNS, the HTTP proxy and SOCKS see only the
// address a packet came from; router mode matches by address too), so a
// rule by MAC could never match.
const macMessage = "%q is a MAC address: unicorn tells devices apart by IP address only (give the device a fixed address, e.g. a DHCP reservation, and name that)"

// isMAC reports whether s is a hardware address in one of the usual forms.
func isMAC(s string) bool {
	_, err := net.ParseMAC(s)
	return err == nil
}
