// Command unicorn makes chosen services fail for the devices behind it: a
// DNS sinkhole and an HTTP(S) proxy driven by one rule engine. It is the
// only place that prints to the terminal and exits.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		var ec cli.ExitCoder
		if errors.As(err, &ec) {
			if msg := ec.Error(); msg != "" {
				fmt.Fprintln(os.Stderr, msg)
			}
			os.Exit(ec.ExitCode())
		}
		fmt.Fprintln(os.Stderr, "unicorn:", err)
		os.Exit(1)
	}
}

// run is main without the process: tests call it with their own writers.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	app := &cli.App{
		Name:    "unicorn",
		Usage:   "make chosen services fail for the devices behind this machine",
		Version: version,
		Description: `unicorn stands between test devices and the internet: a DNS sinkhole and an
HTTP(S) proxy that answer from one set of rules. Point a phone's Wi-Fi proxy
or DNS at it, and the services a scenario names fail the way an outage or a
censor makes them fail. With no --rules it runs the built-in cud-2019
scenario (Chaos Unicorn Day: Infura, Etherscan and the Status cluster down).`,
		Writer:          stdout,
		ErrWriter:       stderr,
		HideHelpCommand: true,
		Commands: []*cli.Command{
			serveCommand(),
			rulesCommand(),
			explainCommand(),
			scenariosCommand(),
			scenarioCommand(),
			eventsCommand(),
			caCommand(),
			routerCommand(),
			captureCommand(),
			reportCommand(),
			discoverCommand(),
			testbedCommand(),
		},
		ExitErrHandler: func(*cli.Context, error) {}, // main prints and exits, once
	}
	return app.RunContext(ctx, args)
}
