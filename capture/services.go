package capture

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/chaos-unicorn/unicorn/rules"
)

// ServiceIndex attributes a destination to a service of a rule set's
// catalogue, whether or not an active rule names the service: it is an
// engine of its own with one allow rule per service, in name order.
type ServiceIndex struct {
	eng *rules.Engine
}

// NewServiceIndex indexes the services of set. A nil set or one without
// services gives an index that attributes nothing.
func NewServiceIndex(set *rules.Set) (*ServiceIndex, error) {
	if set == nil || len(set.Services) == 0 {
		return &ServiceIndex{}, nil
	}
	names := make([]string, 0, len(set.Services))
	for n := range set.Services {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteString("scenario: capture-services\nservices:\n")
	for _, n := range names {
		s := set.Services[n]
		fmt.Fprintf(&b, "  %s:\n", strconv.Quote(n))
		list := func(key string, vals []string) {
			if len(vals) == 0 {
				return
			}
			fmt.Fprintf(&b, "    %s:\n", key)
			for _, v := range vals {
				fmt.Fprintf(&b, "      - %s\n", strconv.Quote(v))
			}
		}
		list("domains", s.Domains())
		list("hosts", s.Hosts())
		var res, ips, ports []string
		for _, r := range s.Regex {
			res = append(res, strings.TrimPrefix(r.String(), "(?i)"))
		}
		for _, p := range s.Prefixes {
			ips = append(ips, p.String())
		}
		for _, p := range s.Ports {
			ports = append(ports, p.String())
		}
		list("regex", res)
		list("ips", ips)
		list("ports", ports)
	}
	b.WriteString("rules:\n")
	for _, n := range names {
		fmt.Fprintf(&b, "  - {service: %s, action: allow}\n", strconv.Quote(n))
	}
	sub, err := rules.Parse("capture-services", []byte(b.String()))
	if err != nil {
		return nil, fmt.Errorf("capture: indexing the services: %w", err)
	}
	eng, err := rules.NewEngine(sub, []string{"capture-services"})
	if err != nil {
		return nil, err
	}
	return &ServiceIndex{eng: eng}, nil
}

// Service returns the name of the service f's destination belongs to, or "".
func (x *ServiceIndex) Service(f rules.Flow) string {
	if x == nil || x.eng == nil {
		return ""
	}
	if d := x.eng.Peek(f); d.Rule != nil {
		return d.Rule.Service
	}
	return ""
}
