package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/chaos-unicorn/unicorn/testbed"
	"github.com/urfave/cli/v2"
)

// testbedState is what `testbed up` leaves for `down` and `probe`.
type testbedState struct {
	PID int `json:"pid"`
	*testbed.Fakes
}

func defaultStatePath() string { return filepath.Join(os.TempDir(), "unicorn-testbed.json") }

func stateFlag() cli.Flag {
	return &cli.StringFlag{Name: "state", Value: defaultStatePath(), Usage: "`FILE` where testbed up records what runs where"}
}

func testbedCommand() *cli.Command {
	return &cli.Command{
		Name:  "testbed",
		Usage: "a fake internet on loopback for demos and rehearsals without a phone, and a probe that tries it",
		Description: `testbed up starts fake Infura, Etherscan, a price API, example.org, a Status
bootnode and a community node on loopback, with a resolver that maps the
scenarios' names to them, and prints what runs where. In another terminal:

  unicorn serve --upstream RESOLVER --dns 127.0.0.1:5353 --proxy 127.0.0.1:8080
  unicorn testbed probe --proxy http://127.0.0.1:8080   # per service: worked, failed fast or hung
  unicorn testbed down`,
		Subcommands: []*cli.Command{testbedUpCommand(), testbedDownCommand(), testbedProbeCommand()},
	}
}

func testbedUpCommand() *cli.Command {
	return &cli.Command{
		Name:  "up",
		Usage: "start the fake internet on loopback, until Ctrl-C or testbed down",
		Flags: []cli.Flag{
			stateFlag(),
			&cli.IntFlag{Name: "node-port", DefaultText: "30303 if free, else any", Usage: "`PORT` of the Status nodes, TCP and UDP"},
		},
		Action: func(c *cli.Context) error {
			path := c.String("state")
			if st, err := readState(path); err == nil && syscall.Kill(st.PID, 0) == nil {
				return cli.Exit(fmt.Sprintf("unicorn testbed up: a testbed already runs (pid %d, %s); stop it with unicorn testbed down", st.PID, path), 1)
			}
			f, err := testbed.StartFakes(testbed.FakesOptions{NodePort: c.Int("node-port")})
			if err != nil {
				return err
			}
			defer f.Close()
			data, err := json.MarshalIndent(testbedState{PID: os.Getpid(), Fakes: f}, "", "  ")
			if err != nil {
				return err
			}
			if err := os.WriteFile(path, data, 0o644); err != nil {
				return err
			}
			defer os.Remove(path)
			w := c.App.Writer
			tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "SERVICE\tPROTO\tADDRESS\tWHAT")
			for _, l := range f.Listeners {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", l.Service, l.Proto, l.Addr, l.What)
			}
			tw.Flush()
			fmt.Fprintf(w, "\nunicorn in front of it:\n  unicorn serve --upstream %s --dns 127.0.0.1:5353 --proxy 127.0.0.1:8080\n", f.DNS)
			fmt.Fprintf(w, "then: unicorn testbed probe --proxy http://127.0.0.1:8080   (state in %s)\ntestbed up: running; Ctrl-C or unicorn testbed down stops it\n", path)
			<-c.Context.Done()
			fmt.Fprintln(w, "testbed up: stopped")
			return nil
		},
	}
}

func readState(path string) (*testbedState, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	st := &testbedState{}
	if err := json.Unmarshal(data, st); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if st.Fakes == nil || st.PID <= 0 {
		return nil, fmt.Errorf("%s: not a testbed state file", path)
	}
	return st, nil
}

func testbedDownCommand() *cli.Command {
	return &cli.Command{
		Name:  "down",
		Usage: "stop the testbed that testbed up started",
		Flags: []cli.Flag{stateFlag()},
		Action: func(c *cli.Context) error {
			path := c.String("state")
			st, err := readState(path)
			if errors.Is(err, os.ErrNotExist) {
				return cli.Exit(fmt.Sprintf("unicorn testbed down: no testbed runs (no %s)", path), 1)
			}
			if err != nil {
				return err
			}
			if err := syscall.Kill(st.PID, syscall.SIGTERM); err != nil {
				os.Remove(path)
				return cli.Exit(fmt.Sprintf("unicorn testbed down: pid %d: %v (removed the stale %s)", st.PID, err, path), 1)
			}
			ctx, cancel := context.WithTimeout(c.Context, 10*time.Second)
			defer cancel()
			tick := time.NewTicker(50 * time.Millisecond)
			defer tick.Stop()
			for syscall.Kill(st.PID, 0) == nil {
				select {
				case <-ctx.Done():
					return cli.Exit(fmt.Sprintf("unicorn testbed down: pid %d did not stop within 10s", st.PID), 1)
				case <-tick.C:
				}
			}
			fmt.Fprintf(c.App.Writer, "testbed (pid %d) stopped\n", st.PID)
			return nil
		},
	}
}

func testbedProbeCommand() *cli.Command {
	return &cli.Command{
		Name:  "probe",
		Usage: "try every service like the app would, and say per service whether it worked, failed fast or hung",
		Description: `Resolves, connects, calls JSON-RPC, joins the bootnode (TCP, and UDP unless
through a proxy), each with a timeout per attempt and retries with back-off:
the checklist a tester would fill by hand. Targets come from the state of
testbed up.`,
		Flags: []cli.Flag{
			stateFlag(),
			&cli.StringFlag{Name: "proxy", Usage: "go through the HTTP proxy at `URL` (e.g. http://127.0.0.1:8080)"},
			&cli.StringFlag{Name: "dns", Usage: "resolve names with the DNS server at `ADDR` (default: the testbed's resolver)"},
			&cli.DurationFlag{Name: "timeout", Value: 5 * time.Second, Usage: "bound of each attempt, a `DURATION`"},
			&cli.IntFlag{Name: "attempts", Value: 2, Usage: "`N` attempts per service"},
			&cli.StringFlag{Name: "format", Value: "text", Usage: "`FORMAT`: text or json"},
		},
		Action: func(c *cli.Context) error {
			st, err := readState(c.String("state"))
			if errors.Is(err, os.ErrNotExist) {
				return cli.Exit("unicorn testbed probe: no testbed runs: start one with unicorn testbed up (or give --state)", 1)
			}
			if err != nil {
				return err
			}
			cfg := testbed.ProbeConfig{Targets: st.Targets, DNS: st.DNS, Timeout: c.Duration("timeout"), Attempts: c.Int("attempts")}
			if d := c.String("dns"); d != "" {
				cfg.DNS = d
			}
			if p := c.String("proxy"); p != "" {
				u, err := url.Parse(p)
				if err != nil || u.Host == "" {
					return cli.Exit(fmt.Sprintf("unicorn testbed probe: --proxy %q is not a URL (want e.g. http://127.0.0.1:8080)", p), 2)
				}
				cfg.Proxy = u
			}
			results := testbed.Probe(c.Context, cfg)
			if c.String("format") == "json" {
				enc := json.NewEncoder(c.App.Writer)
				enc.SetIndent("", "  ")
				return enc.Encode(results)
			}
			return testbed.WriteProbeResults(c.App.Writer, results)
		},
	}
}
