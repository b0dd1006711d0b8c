package main

import (
	"fmt"
	"slices"
	"strings"

	"github.com/urfave/cli/v2"
)

func scenariosCommand() *cli.Command {
	return &cli.Command{
		Name:  "scenarios",
		Usage: "list the loaded scenarios and their services",
		Flags: ruleFlags(),
		Action: func(c *cli.Context) error {
			set, active, err := loadRules(c)
			if err != nil {
				return err
			}
			w := c.App.Writer
			for _, sc := range set.Scenarios {
				state := "off"
				switch {
				case slices.Contains(active, sc.Name):
					state = "ACTIVE"
				case sc.Optional:
					state = "optional"
				}
				fmt.Fprintf(w, "%-8s %s  (%s)\n", state, sc.Name, sc.Pos.File)
				if sc.Description != "" {
					fmt.Fprintf(w, "         %s\n", sc.Description)
				}
				for _, r := range sc.Rules {
					target := r.Service
					if target == "" {
						target = "(inline match)"
					}
					fmt.Fprintf(w, "         %-8s %s\n", r.Action, target)
				}
			}
			fmt.Fprintln(w, "\nservices:")
			names := make([]string, 0, len(set.Services))
			for n := range set.Services {
				names = append(names, n)
			}
			slices.Sort(names)
			for _, n := range names {
				svc := set.Services[n]
				var parts []string
				if k := svc.NumNames(); k > 0 {
					parts = append(parts, fmt.Sprintf("%d name(s)", k))
				}
				if k := len(svc.Prefixes); k > 0 {
					parts = append(parts, fmt.Sprintf("%d address(es)", k))
				}
				if k := len(svc.Ports); k > 0 {
					ps := make([]string, k)
					for i, p := range svc.Ports {
						ps[i] = p.String()
					}
					parts = append(parts, "ports "+strings.Join(ps, ","))
				}
				fmt.Fprintf(w, "  %-22s %s\n", n, strings.Join(parts, ", "))
				if svc.Description != "" {
					fmt.Fprintf(w, "  %-22s %s\n", "", svc.Description)
				}
			}
			fmt.Fprintln(w, "\nactivate with: unicorn serve --scenario NAME (repeatable)")
			return nil
		},
	}
}
