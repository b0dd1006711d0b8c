package main

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
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
	// Namespaces are the namespaces of `up --netns` by role (phone,
	// phone2, router, inet): down removes them by these names if up could
	// not, and probe dials from the phone's.
	Namespaces map[string]string `json:"namespaces,omitempty"`
	// CA is the file holding the test CA's certificate (--netns).
	CA string `json:"ca,omitempty"`
}

// caPath is where up --netns writes the test CA's certificate: beside the
// state file.
func caPath(state string) string { return strings.TrimSuffix(state, ".json") + "-ca.pem" }

func defaultStatePath() string { return filepath.Join(os.TempDir(), "unicorn-testbed.json") }

func stateFlag() cli.Flag {
	return &cli.StringFlag{Name: "state", Value: defaultStatePath(), Usage: "`FILE` where testbed up records what runs where"}
}

func testbedCommand() *cli.Command {
	return &cli.Command{
		Name:  "testbed",
		Usage: "a fake internet (on loopback, or in network namespaces) for demos and rehearsals without a phone, and a probe that tries it",
		Description: `testbed up starts fake Infura, Etherscan, a price API, example.org, a Status
bootnode and a community node on loopback, with a resolver that maps the
scenarios' names to them, and prints what runs where. In another terminal:

  unicorn serve --upstream RESOLVER --dns 127.0.0.1:5353 --proxy 127.0.0.1:8080
  unicorn testbed probe --proxy http://127.0.0.1:8080   # per service: worked, failed fast or hung
  unicorn testbed down

As root, testbed up --netns builds a home network in network namespaces
instead: a phone and a second device behind a router, whose WAN leads to
the fake internet on RFC 5737 addresses, over HTTPS with the testbed's own
CA (its certificate is written beside --state). The router forwards until
you run unicorn router up in its namespace (up prints the command); the
probe then dials from the phone's namespace:

  sudo unicorn testbed up --netns
  sudo ip netns exec ROUTER-NS unicorn router up --lan lan0 --upstream 203.0.113.53:53 ...
  sudo unicorn testbed probe            # as the phone
  sudo unicorn testbed down             # removes the namespaces it made`,
		Subcommands: []*cli.Command{testbedUpCommand(), testbedDownCommand(), testbedProbeCommand()},
	}
}

func testbedUpCommand() *cli.Command {
	return &cli.Command{
		Name:  "up",
		Usage: "start the fake internet (on loopback, or with --netns in namespaces), until Ctrl-C or testbed down",
		Flags: []cli.Flag{
			stateFlag(),
			&cli.IntFlag{Name: "node-port", DefaultText: "30303 if free, else any", Usage: "`PORT` of the Status nodes, TCP and UDP (loopback only)"},
			&cli.BoolFlag{Name: "netns", Usage: "build phone, router and fake internet in network namespaces, on RFC 5737 addresses over HTTPS (needs root)"},
		},
		Action: func(c *cli.Context) error {
			path := c.String("state")
			if st, err := readState(path); err == nil && syscall.Kill(st.PID, 0) == nil {
				return cli.Exit(fmt.Sprintf("unicorn testbed up: a testbed already runs (pid %d, %s); stop it with unicorn testbed down", st.PID, path), 1)
			}
			if c.Bool("netns") {
				return testbedUpNetns(c, path)
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

// testbedUpNetns is testbed up --netns.
func testbedUpNetns(c *cli.Context, path string) error {
	if c.IsSet("node-port") {
		return cli.Exit("unicorn testbed up: --node-port is for the loopback testbed; with --netns the nodes listen on 30303 of their own addresses", 2)
	}
	if why := testbed.NetnsUnavailable(); why != "" {
		return cli.Exit(fmt.Sprintf("unicorn testbed up --netns: %s; run it with sudo, or leave out --netns for the testbed on loopback", why), 1)
	}
	f, err := testbed.StartNetFakes()
	if err != nil {
		return err
	}
	defer func() {
		if err := f.Close(); err != nil {
			fmt.Fprintf(c.App.ErrWriter, "testbed up: %v\n", err)
		}
	}()
	ca := caPath(path)
	if err := os.WriteFile(ca, testbed.TestCA().PEM(), 0o644); err != nil {
		return err
	}
	defer os.Remove(ca)
	st := testbedState{PID: os.Getpid(), Fakes: &testbed.Fakes{DNS: f.DNS, Targets: f.Targets, Listeners: f.Listeners}, Namespaces: f.Namespaces, CA: ca}
	data, err := json.MarshalIndent(st, "", "  ")
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
	fmt.Fprintln(tw, "\nNAMESPACE\tROLE\tADDRESSES\t")
	fmt.Fprintf(tw, "%s\tphone\t%s, %s\tvia the router\n", f.Namespaces["phone"], testbed.PhoneAddr4, testbed.PhoneAddr6)
	fmt.Fprintf(tw, "%s\tphone2\t%s, %s\tvia the router\n", f.Namespaces["phone2"], testbed.Phone2Addr4, testbed.Phone2Addr6)
	fmt.Fprintf(tw, "%s\trouter\tLAN %s %s/24, WAN %s %s/24\tforwards; no unicorn yet\n", f.Namespaces["router"], testbed.TopoLAN, testbed.RouterLAN4, testbed.TopoWAN, testbed.RouterWAN4)
	fmt.Fprintf(tw, "%s\tinet\t%s, the services above\tthe fake internet\n", f.Namespaces["inet"], testbed.InetWAN4)
	tw.Flush()
	fmt.Fprintf(w, "\ntest CA: %s (trust it on the client; it signs every fake's certificate, valid 24h)\n", ca)
	fmt.Fprintf(w, "\nunicorn in front of it, in the router:\n  sudo ip netns exec %s unicorn router up --lan %s --upstream %s --allow-clients 192.0.2.0/24 --allow-clients 2001:db8:1::/64\n",
		f.Namespaces["router"], testbed.TopoLAN, f.DNS)
	fmt.Fprintf(w, "probe as the phone (dials from %s):\n  sudo unicorn testbed probe --state %s\n", f.Namespaces["phone"], path)
	fmt.Fprintf(w, "anything else as the phone:\n  sudo ip netns exec %s curl --cacert %s --resolve mainnet.infura.io:443:%s https://mainnet.infura.io/v3/testbed -d '{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"eth_blockNumber\"}'\n",
		f.Namespaces["phone"], ca, testbed.InfuraAddr4)
	fmt.Fprintf(w, "a real device: move a spare interface onto the LAN (sudo ip link set IFACE netns %s; sudo ip -n %s link set IFACE master %s up),\n  give the device an address in 192.0.2.0/24, gateway %s, DNS %s, and trust the CA\n",
		f.Namespaces["router"], f.Namespaces["router"], testbed.TopoLAN, testbed.RouterLAN4, testbed.ResolverAddr4)
	fmt.Fprintf(w, "testbed up: running; Ctrl-C or unicorn testbed down stops it (state in %s)\n", path)
	<-c.Context.Done()
	fmt.Fprintln(w, "testbed up: stopped")
	return nil
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
				if lerr := removeLeftovers(c, path, st); lerr != nil {
					return lerr
				}
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
			return removeLeftovers(c, path, st)
		},
	}
}

// removeLeftovers removes what a testbed up that could not clean up (it
// was killed) left: its namespaces, by the names it recorded, with their
// veths and bridge, its CA file and its state file.
func removeLeftovers(c *cli.Context, path string, st *testbedState) error {
	var failed []string
	for _, role := range []string{"phone", "phone2", "router", "inet"} {
		name := st.Namespaces[role]
		if name == "" {
			continue
		}
		if _, err := os.Stat(filepath.Join("/run/netns", name)); err != nil {
			continue
		}
		if out, err := exec.CommandContext(c.Context, "ip", "netns", "del", name).CombinedOutput(); err != nil {
			failed = append(failed, fmt.Sprintf("ip netns del %s: %v: %s", name, err, strings.TrimSpace(string(out))))
			continue
		}
		fmt.Fprintf(c.App.Writer, "removed namespace %s (left by pid %d)\n", name, st.PID)
	}
	for _, f := range []string{st.CA, path} {
		if f != "" {
			os.Remove(f)
		}
	}
	if len(failed) > 0 {
		return cli.Exit("unicorn testbed down: "+strings.Join(failed, "; "), 1)
	}
	return nil
}

func testbedProbeCommand() *cli.Command {
	return &cli.Command{
		Name:  "probe",
		Usage: "try every service like the app would, and say per service whether it worked, failed fast or hung",
		Description: `Resolves, connects, calls JSON-RPC, joins the bootnode (TCP, and UDP unless
through a proxy), each with a timeout per attempt and retries with back-off:
the checklist a tester would fill by hand. Targets come from the state of
testbed up. With a testbed up --netns, the probe dials from the phone's
namespace (--from), with the testbed's CA.`,
		Flags: []cli.Flag{
			stateFlag(),
			&cli.StringFlag{Name: "from", Value: "phone", Usage: "with testbed up --netns: dial from the namespace of device `ROLE` (phone or phone2), or \"here\""},
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
			if st.CA != "" {
				pem, err := os.ReadFile(st.CA)
				if err != nil {
					return cli.Exit(fmt.Sprintf("unicorn testbed probe: the testbed's CA: %v", err), 1)
				}
				cfg.RootCAs = x509.NewCertPool()
				if !cfg.RootCAs.AppendCertsFromPEM(pem) {
					return cli.Exit(fmt.Sprintf("unicorn testbed probe: %s holds no certificate", st.CA), 1)
				}
			}
			if from := c.String("from"); len(st.Namespaces) > 0 && from != "here" {
				if from != "phone" && from != "phone2" {
					return cli.Exit(fmt.Sprintf("unicorn testbed probe: --from %q: want phone, phone2 or here", from), 2)
				}
				if os.Geteuid() != 0 {
					return cli.Exit("unicorn testbed probe: the testbed runs in namespaces: run the probe as root (sudo) to dial from the "+from+"'s, or give --from here", 1)
				}
				cfg.Dial = (&testbed.Netns{Name: st.Namespaces[from]}).DialContext
			}
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
