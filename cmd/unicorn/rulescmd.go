package main

import (
	"fmt"

	"github.com/chaos-unicorn/unicorn/rules"
	"github.com/urfave/cli/v2"
)

func rulesCommand() *cli.Command {
	return &cli.Command{
		Name:  "rules",
		Usage: "work with rule files",
		Subcommands: []*cli.Command{{
			Name:      "check",
			Usage:     "validate rule files and print every error",
			ArgsUsage: "PATH...",
			Description: `Loads the files and directories given, as serve would, and prints every error
with file:line:col, the field and what would be valid. Exits 1 on any error.`,
			Action: func(c *cli.Context) error {
				if c.NArg() == 0 {
					return cli.Exit("unicorn rules check: give one or more rule files or directories", 2)
				}
				set, err := rules.Load(c.Args().Slice()...)
				if err != nil {
					if list := rules.Errors(err); list != nil {
						fmt.Fprintln(c.App.ErrWriter, list.Error())
						return cli.Exit(fmt.Sprintf("%d error(s)", len(list)), 1)
					}
					return cli.Exit(err.Error(), 1)
				}
				nrules, nnames := 0, 0
				for _, sc := range set.Scenarios {
					nrules += len(sc.Rules)
				}
				for _, svc := range set.Services {
					nnames += svc.NumNames()
				}
				fmt.Fprintf(c.App.Writer, "ok: %d scenario(s), %d rule(s), %d service(s) with %d name(s), %d device group(s)\n",
					len(set.Scenarios), nrules, len(set.Services), nnames, len(set.Devices))
				if set.Skipped > 0 {
					fmt.Fprintf(c.App.Writer, "note: %d list line(s) skipped (adblock exceptions, cosmetic rules or paths cannot be applied at the network level)\n", set.Skipped)
				}
				return nil
			},
		}},
	}
}
