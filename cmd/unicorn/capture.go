package main

import (
	"bufio"
	"fmt"
	"os"
	"time"

	"github.com/chaos-unicorn/unicorn/capture"
	"github.com/urfave/cli/v2"
)

func captureCommand() *cli.Command {
	return &cli.Command{
		Name:      "capture",
		Usage:     "capture packets on an interface into a pcap file, for unicorn report",
		ArgsUsage: " ",
		Description: `Captures every frame on --iface (Linux AF_PACKET, no libpcap; needs root or
CAP_NET_RAW) into --out as pcap, until Ctrl-C or --duration. A progress line
of packets and bytes goes to standard error. To prove an outage held, capture
on unicorn's internet-side interface during the rehearsal, then:

  unicorn report --format html --out report.html FILE`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "iface", Aliases: []string{"i"}, Required: true, Usage: "capture on interface `IF` (e.g. eth0)"},
			&cli.StringFlag{Name: "out", Aliases: []string{"o"}, Required: true, Usage: "write the capture to `FILE` (pcap)"},
			&cli.DurationFlag{Name: "duration", Aliases: []string{"d"}, DefaultText: "until Ctrl-C", Usage: "stop after `D` (e.g. 30s, 10m)"},
			&cli.Int64Flag{Name: "count", Aliases: []string{"c"}, DefaultText: "no limit", Usage: "stop after `N` packets"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return cli.Exit("unicorn capture: no arguments expected (give --iface and --out)", 2)
			}
			// Before the output file: a typo must not truncate a capture.
			if err := capture.CheckInterface(c.String("iface")); err != nil {
				return err
			}
			path := c.String("out")
			f, err := os.Create(path)
			if err != nil {
				return err
			}
			bw := bufio.NewWriterSize(f, 1<<20)
			errw := c.App.ErrWriter
			iface := c.String("iface")
			started := time.Now()
			st, err := capture.Live(c.Context, bw, capture.LiveOptions{
				Iface:      iface,
				Duration:   c.Duration("duration"),
				MaxPackets: c.Int64("count"),
				Progress: func(packets, bytes int64) {
					fmt.Fprintf(errw, "\rcapturing on %s: %d packets, %d bytes, %s ", iface, packets, bytes, time.Since(started).Round(time.Second))
				},
			})
			fmt.Fprintln(errw)
			if ferr := bw.Flush(); err == nil {
				err = ferr
			}
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
			msg := fmt.Sprintf("wrote %d packets (%d bytes) to %s", st.Packets, st.Bytes, path)
			if st.Dropped > 0 {
				msg += fmt.Sprintf("; the kernel dropped %d", st.Dropped)
			}
			fmt.Fprintln(errw, msg)
			return nil
		},
	}
}
