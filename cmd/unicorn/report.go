package main

import (
	"bufio"
	"fmt"
	"io"
	"net/netip"
	"os"
	"time"

	"github.com/chaos-unicorn/unicorn/capture"
	"github.com/urfave/cli/v2"
)

func reportCommand() *cli.Command {
	return &cli.Command{
		Name:      "report",
		Usage:     "say what each device tried against each service in a capture, and whether anything leaked",
		ArgsUsage: "FILE",
		Description: `FILE is a pcap or pcapng capture (unicorn capture, tcpdump -w, Wireshark).
Per device and service: attempts (TCP SYNs, UDP flows, DNS questions),
retries and their back-off, names resolved, fallbacks to other hosts,
resolvers other than the expected one, DNS over TLS/HTTPS, QUIC, and leaks:
flows that got past a rule that blocks them. Verdicts come from the rules
(--rules, --scenario; default the built-in scenarios).

Take the capture on the internet side of unicorn (--side inet, the default)
to prove an outage held: there, any packet from a device to a blocked
address and any completed handshake with a blocked name is a leak (DNS
questions are not: unicorn asks them itself). On the device side (--side
device) only blocked flows that were answered anyway count, and blocked
names resolved to real addresses.

Exit status: 0 when nothing leaked, 3 when something did (for CI), 1 or 2
on errors.`,
		Flags: append(ruleFlags(),
			&cli.StringFlag{Name: "format", Aliases: []string{"f"}, Value: "text", Usage: "`FORMAT` of the report: text, json or html"},
			&cli.StringFlag{Name: "out", Aliases: []string{"o"}, Usage: "write the report to `FILE` instead of standard output"},
			&cli.StringFlag{Name: "side", Value: "inet", Usage: "`SIDE` of unicorn the capture was taken on: inet (between unicorn and the internet) or device"},
			&cli.StringSliceFlag{Name: "resolver", Usage: "the DNS server devices should use, `IP` (repeatable; default: each device's most used)"},
			&cli.StringFlag{Name: "since", Usage: "when the scenarios were switched on, `TIME` in RFC 3339 (rules with phases count from it; default: the first packet)"},
			&cli.BoolFlag{Name: "no-rules", Usage: "report attempts only, without verdicts or leaks"},
		),
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return cli.Exit("unicorn report: give one capture FILE (pcap or pcapng), e.g. unicorn report rehearsal.pcap", 2)
			}
			format := c.String("format")
			if format != "text" && format != "json" && format != "html" {
				return cli.Exit(fmt.Sprintf("unicorn report: --format %q is not a format (want text, json or html)", format), 2)
			}
			a, err := newAnalyzer(c)
			if err != nil {
				return err
			}
			path := c.Args().First()
			if err := readCapture(a, path); err != nil {
				return err
			}
			r := a.Report()
			r.File = path
			err = writeOut(c, func(w io.Writer) error {
				switch format {
				case "json":
					return r.WriteJSON(w)
				case "html":
					return r.WriteHTML(w)
				}
				return r.WriteText(w)
			})
			if err != nil {
				return err
			}
			if n := r.LeakCount(); n > 0 {
				return cli.Exit(fmt.Sprintf("unicorn report: %d leak(s) in %s", n, path), 3)
			}
			return nil
		},
	}
}

// newAnalyzer builds an Analyzer from the rule flags and --side, --resolver.
func newAnalyzer(c *cli.Context) (*capture.Analyzer, error) {
	var opt capture.Options
	switch s := c.String("side"); s {
	case "inet", "":
	case "device":
		opt.Side = capture.SideDevice
	default:
		return nil, cli.Exit(fmt.Sprintf("unicorn %s: --side %q is not a side (want inet or device)", c.Command.Name, s), 2)
	}
	for _, s := range c.StringSlice("resolver") {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, cli.Exit(fmt.Sprintf("unicorn %s: --resolver %q is not an IP address", c.Command.Name, s), 2)
		}
		opt.Resolvers = append(opt.Resolvers, a)
	}
	if s := c.String("since"); s != "" {
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return nil, cli.Exit(fmt.Sprintf("unicorn %s: --since %q is not a time (want RFC 3339, e.g. 2019-04-01T09:00:00Z)", c.Command.Name, s), 2)
		}
		opt.Since = t
	}
	if !c.Bool("no-rules") {
		e, err := newEngine(c)
		if err != nil {
			return nil, err
		}
		opt.Engine = e
	}
	return capture.NewAnalyzer(opt)
}

func readCapture(a *capture.Analyzer, path string) error {
	f, err := capture.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return a.ReadFrom(f)
}

// writeOut runs write on --out (created) or on the app's writer.
func writeOut(c *cli.Context, write func(io.Writer) error) error {
	path := c.String("out")
	if path == "" {
		return write(c.App.Writer)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	bw := bufio.NewWriter(f)
	if err := write(bw); err != nil {
		f.Close()
		return err
	}
	if err := bw.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
