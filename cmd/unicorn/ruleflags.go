package main

import (
	"fmt"
	"runtime/debug"

	"github.com/chaos-unicorn/unicorn/rules"
	"github.com/urfave/cli/v2"
)

// ruleFlags are the flags every command that loads rules shares.
func ruleFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringSliceFlag{
			Name:    "rules",
			Aliases: []string{"r"},
			Usage:   "rule `PATH`: a scenario or catalogue file, or a directory of them (repeatable; default: the built-in scenarios)",
			EnvVars: []string{"UNICORN_RULES"},
		},
		&cli.StringSliceFlag{
			Name:    "scenario",
			Aliases: []string{"s"},
			Usage:   "activate scenario `NAME` (repeatable, earlier wins; default: every non-optional scenario loaded)",
			EnvVars: []string{"UNICORN_SCENARIO"},
		},
	}
}

// loadRules loads --rules (or the built-ins) and returns the set and the
// scenarios to activate.
func loadRules(c *cli.Context) (*rules.Set, []string, error) {
	var set *rules.Set
	var err error
	if paths := c.StringSlice("rules"); len(paths) > 0 {
		set, err = rules.Load(paths...)
	} else {
		set, err = rules.Builtin()
	}
	if err != nil {
		if list := rules.Errors(err); list != nil {
			return nil, nil, fmt.Errorf("%d error(s) in the rules, nothing loaded:\n%w", len(list), err)
		}
		return nil, nil, err
	}
	active := c.StringSlice("scenario")
	if len(active) == 0 {
		active = set.Defaults()
	}
	return set, active, nil
}

// newEngine loads the rules and compiles the active scenarios.
func newEngine(c *cli.Context) (*rules.Engine, error) {
	// Loading a big list makes garbage (file buffers, grown slices): collect
	// it more eagerly meanwhile, then hand it back to the system, so a
	// router keeps only what the rules need.
	defer debug.SetGCPercent(debug.SetGCPercent(25))
	defer debug.FreeOSMemory()
	set, active, err := loadRules(c)
	if err != nil {
		return nil, err
	}
	return rules.NewEngine(set, active)
}
