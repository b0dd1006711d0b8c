package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"

	"github.com/chaos-unicorn/unicorn/control"
	"github.com/urfave/cli/v2"
)

func scenarioCommand() *cli.Command {
	return &cli.Command{
		Name:  "scenario",
		Usage: "switch scenarios of a running unicorn on and off",
		Description: `Talks to the control API of a running unicorn serve (--control, default
127.0.0.1:8053). Switches take effect at once and never disturb traffic;
they last until switched again, or for --for, after which the scenario goes
back to what it was. A reload of the rule files keeps them.`,
		Subcommands: []*cli.Command{
			{
				Name:   "list",
				Usage:  "list the loaded scenarios: on or off, for which devices, until when",
				Flags:  clientFlags(),
				Action: scenarioList,
			},
			{
				Name:      "on",
				Usage:     "switch a scenario on",
				ArgsUsage: "NAME",
				Description: `NAME keeps its place among the scenarios: those on at start come
first, then the others in load order, and the first rule that matches wins.
A scenario switched on behind one that already decides a service (the
built-in cud-2019 rejects Infura and Etherscan) changes nothing for it:
switch the other off first. unicorn explain --remote TARGET shows which
rule decides now.`,
				Flags: append(clientFlags(),
					&cli.DurationFlag{Name: "for", Usage: "switch back after `DURATION` (e.g. 10m)"},
					&cli.StringSliceFlag{Name: "clients", Usage: "only for the devices of `GROUP` (a devices: group of the rules), an address or a CIDR (repeatable; default: every device)"},
				),
				Action: func(c *cli.Context) error { return scenarioSwitch(c, true) },
			},
			{
				Name:      "off",
				Usage:     "switch a scenario off",
				ArgsUsage: "NAME",
				Flags: append(clientFlags(),
					&cli.DurationFlag{Name: "for", Usage: "switch back on after `DURATION` (e.g. 10m)"},
				),
				Action: func(c *cli.Context) error { return scenarioSwitch(c, false) },
			},
			{
				Name:  "reset",
				Usage: "switch every scenario off",
				Flags: clientFlags(),
				Action: func(c *cli.Context) error {
					var l control.ScenarioList
					if err := newAPIClient(c).call(c.Context, "POST", "/api/reset", nil, &l); err != nil {
						return err
					}
					fmt.Fprintln(c.App.Writer, "every scenario is off")
					return nil
				},
			},
		},
	}
}

func scenarioList(c *cli.Context) error {
	var l control.ScenarioList
	if err := newAPIClient(c).call(c.Context, "GET", "/api/scenarios", nil, &l); err != nil {
		return err
	}
	w := c.App.Writer
	for _, sc := range l.Scenarios {
		printScenario(w, sc)
	}
	if len(l.Devices) > 0 {
		fmt.Fprint(w, "\ndevice groups:")
		for name, ps := range l.Devices {
			fmt.Fprintf(w, " %s (%s)", name, strings.Join(ps, ", "))
		}
		fmt.Fprintln(w)
	}
	return nil
}

func printScenario(w io.Writer, sc control.ScenarioJSON) {
	state := "off"
	if sc.On {
		state = "ON"
	}
	fmt.Fprintf(w, "%-4s %s", state, sc.Name)
	if sc.On {
		if len(sc.Clients) > 0 {
			fmt.Fprintf(w, "  for %s", strings.Join(sc.Clients, ", "))
		} else {
			fmt.Fprint(w, "  for every device")
		}
	}
	if !sc.RevertAt.IsZero() {
		fmt.Fprintf(w, "  until %s (in %s)", sc.RevertAt.Local().Format("15:04:05"), time.Until(sc.RevertAt).Round(time.Second))
	}
	fmt.Fprintln(w)
	if sc.Description != "" {
		fmt.Fprintf(w, "     %s\n", sc.Description)
	}
}

func scenarioSwitch(c *cli.Context, on bool) error {
	if c.NArg() < 1 {
		return cli.Exit(fmt.Sprintf("unicorn scenario %s: give one scenario NAME (unicorn scenario list shows them)", onOff(on)), 2)
	}
	// Flags after NAME (unicorn scenario on slow --for 10m) are left in
	// the arguments by the cli package: parse them here.
	fs := flag.NewFlagSet("unicorn scenario "+onOff(on), flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	forD := fs.Duration("for", c.Duration("for"), "")
	clients := append([]string(nil), c.StringSlice("clients")...)
	fs.Func("clients", "", func(s string) error {
		if !on {
			return errors.New("a scenario is switched off for every device")
		}
		clients = append(clients, s)
		return nil
	})
	ctl := fs.String("control", c.String("control"), "")
	token := fs.String("token", c.String("token"), "")
	if err := fs.Parse(c.Args().Tail()); err != nil {
		return cli.Exit(fmt.Sprintf("unicorn scenario %s: %v (unicorn scenario %[1]s --help)", onOff(on), err), 2)
	}
	if fs.NArg() > 0 {
		return cli.Exit(fmt.Sprintf("unicorn scenario %s: one scenario NAME at a time (got also %q)", onOff(on), fs.Args()), 2)
	}
	req := control.SwitchRequest{Clients: clients}
	if *forD > 0 {
		req.For = forD.String()
	} else if *forD < 0 {
		return cli.Exit("--for: want a positive duration, e.g. 10m", 2)
	}
	a := newAPIClient(c)
	a.addr, a.token = *ctl, *token
	a.base = apiBase(a.addr)
	var sc control.ScenarioJSON
	path := "/api/scenarios/" + url.PathEscape(c.Args().First()) + "/" + onOff(on)
	if err := a.call(c.Context, "POST", path, req, &sc); err != nil {
		return err
	}
	printScenario(c.App.Writer, sc)
	if on {
		// A scenario switched on behind others that are on changes
		// nothing where their rules match first: say so.
		var l control.ScenarioList
		if a.call(c.Context, "GET", "/api/scenarios", nil, &l) == nil {
			if before := onBefore(l.Scenarios, sc.Name); len(before) > 0 {
				fmt.Fprintf(c.App.Writer, "     after %s (on): where both match, the earlier rules win (unicorn explain --remote TARGET)\n", strings.Join(before, ", "))
			}
		}
	}
	return nil
}

// onBefore returns the scenarios that are on and come before name in
// priority order.
func onBefore(list []control.ScenarioJSON, name string) []string {
	var out []string
	for _, sc := range list {
		if sc.Name == name {
			return out
		}
		if sc.On {
			out = append(out, sc.Name)
		}
	}
	return nil
}

func onOff(on bool) string {
	if on {
		return "on"
	}
	return "off"
}
