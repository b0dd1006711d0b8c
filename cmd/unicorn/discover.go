package main

import (
	"io"
	"path/filepath"

	"github.com/chaos-unicorn/unicorn/capture"
	"github.com/urfave/cli/v2"
)

func discoverCommand() *cli.Command {
	return &cli.Command{
		Name:      "discover",
		Usage:     "propose a service catalogue (rules YAML) from what the devices in a capture contacted",
		ArgsUsage: "FILE",
		Description: `Reads a pcap or pcapng capture of your app and writes a rule file: one
service per registrable domain the devices resolved or named (DNS, TLS SNI,
HTTP Host), one per /24 (or /48) of addresses dialed without a name, with
the ports seen, and an optional scenario that allows them all. Edit it,
check it with 'unicorn rules check', and cut services one by one:

  unicorn discover app.pcap --out my-services.yaml
  unicorn rules check my-services.yaml
  unicorn serve --rules my-services.yaml --scenario discovered`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "out", Aliases: []string{"o"}, Usage: "write the rules to `FILE` instead of standard output"},
			&cli.StringFlag{Name: "scenario", Value: "discovered", Usage: "`NAME` of the proposed scenario"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return cli.Exit("unicorn discover: give one capture FILE (pcap or pcapng), e.g. unicorn discover app.pcap", 2)
			}
			a, err := capture.NewAnalyzer(capture.Options{})
			if err != nil {
				return err
			}
			path := c.Args().First()
			if err := readCapture(a, path); err != nil {
				return err
			}
			cat := a.Discover()
			return writeOut(c, func(w io.Writer) error {
				return cat.WriteYAML(w, filepath.Base(path), c.String("scenario"))
			})
		},
	}
}
