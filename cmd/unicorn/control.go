package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/chaos-unicorn/unicorn/control"
	"github.com/chaos-unicorn/unicorn/dnsblock"
	"github.com/chaos-unicorn/unicorn/proxy"
	"github.com/chaos-unicorn/unicorn/rules"
	"github.com/urfave/cli/v2"
)

// defaultControl is where the control API and dashboard listen unless
// --control says otherwise: loopback, next to the DNS default 5353.
const defaultControl = "127.0.0.1:8053"

// controlFlags are serve's flags for the control plane and the event log.
func controlFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "control", Value: defaultControl, Usage: "control API and dashboard listen `ADDR` (\"\" to disable); any non-loopback address requires a token", EnvVars: []string{"UNICORN_CONTROL"}},
		&cli.StringFlag{Name: "control-token", Usage: "`TOKEN` the control API requires (default on a non-loopback --control: a random one, printed at start)", EnvVars: []string{"UNICORN_TOKEN"}},
		&cli.StringFlag{Name: "events", Usage: "append every blocked or faulted request to `FILE` as JSON Lines"},
		&cli.StringFlag{Name: "events-max-size", Value: "10MB", Usage: "rotate the --events file when it would pass `SIZE` (e.g. 500KB, 10MB, 1GB)"},
		&cli.IntFlag{Name: "events-keep", Value: 3, Usage: "keep `N` rotated event files (FILE.1 is the newest)"},
		&cli.BoolFlag{Name: "watch", Value: true, Usage: "reload the --rules files when they change (--watch=false: only on SIGHUP)"},
	}
}

// controlPlane is what serve runs besides the front ends: the event hub,
// the switches, the reload record and, unless disabled, the control server.
type controlPlane struct {
	hub       *control.Hub
	switches  *control.Switches
	reloads   *control.Reloads
	srv       *control.Server // nil: --control ""
	ln        net.Listener
	token     string
	generated bool // the token was made up at start, not given
}

// newControlPlane attaches the event hub to e and opens the control
// listener (so that a busy port fails the start); serve starts it later.
func newControlPlane(c *cli.Context, e *rules.Engine, log *slog.Logger) (*controlPlane, error) {
	cp := &controlPlane{reloads: &control.Reloads{}}
	var elog *control.EventLog
	if path := c.String("events"); path != "" {
		size, err := parseSize(c.String("events-max-size"))
		if err != nil {
			return nil, cli.Exit(fmt.Sprintf("--events-max-size %q: %v", c.String("events-max-size"), err), 2)
		}
		if c.Int("events-keep") < 0 {
			return nil, cli.Exit("--events-keep: want 0 or more rotated files", 2)
		}
		if elog, err = control.OpenEventLog(path, size, c.Int("events-keep")); err != nil {
			return nil, cli.Exit(fmt.Sprintf("--events %s: %v", path, err), 1)
		}
	}
	cp.hub = control.NewHub(control.HubConfig{Log: elog, Logger: log})
	cp.hub.Attach(e)
	cp.switches = control.NewSwitches(e, nil, log)
	addr := strings.TrimSpace(c.String("control"))
	if addr == "" {
		return cp, nil
	}
	cp.token = c.String("control-token")
	if cp.token == "" && control.TokenRequired(addr) {
		cp.token, cp.generated = control.NewToken(), true
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		cp.close()
		return nil, listenErr("--control", addr, err)
	}
	cp.ln = ln
	return cp, nil
}

// start creates the control server; explain is what /api/explain runs.
func (cp *controlPlane) start(e *rules.Engine, log *slog.Logger, dnsSrv *dnsblock.Server, px *proxy.Proxy) error {
	if cp.ln == nil {
		return nil
	}
	srv, err := control.New(control.Config{
		Engine: e, Hub: cp.hub, Switches: cp.switches, Reloads: cp.reloads,
		Token: cp.token, Version: version, Logger: log,
		Seed: strconv.FormatUint(e.Seed(), 10), // as the banner prints it: --seed repeats a run
		Explain: func(w io.Writer, target, client string) error {
			t, err := parseTarget(target)
			if err != nil {
				return err
			}
			if client != "" {
				if t.client, err = netip.ParseAddr(client); err != nil {
					return fmt.Errorf("client %q is not an IP address", client)
				}
			}
			explain(w, e, t)
			return nil
		},
		DNSStats:   dnsSrv.Stats,
		ProxyStats: px.Stats,
	})
	if err != nil {
		return err
	}
	cp.srv = srv
	return nil
}

// serve runs the control server until close; nil when disabled.
func (cp *controlPlane) serve() error {
	if cp.srv == nil {
		return nil
	}
	return cp.srv.Serve(cp.ln)
}

func (cp *controlPlane) close() {
	if cp.srv != nil {
		cp.srv.Close()
	} else if cp.ln != nil {
		cp.ln.Close()
	}
	cp.hub.Close()
}

// banner is the control line of serve's banner.
func (cp *controlPlane) banner(w io.Writer) {
	if cp.ln == nil {
		fmt.Fprintln(w, "control off (--control \"\"): no dashboard, no unicorn scenario/events commands")
		return
	}
	a := cp.ln.Addr().String()
	host, port, _ := net.SplitHostPort(a)
	if ip, err := netip.ParseAddr(host); err == nil && ip.IsUnspecified() {
		host = "THIS-MACHINE"
	}
	page := "http://" + net.JoinHostPort(host, port) + "/"
	switch {
	case cp.token == "":
		fmt.Fprintf(w, "control %-22s dashboard: %s   try: unicorn scenario list\n", a, page)
	case cp.generated:
		fmt.Fprintf(w, "control %-22s dashboard: %s?token=%s   token %s (generated; set one with --control-token)\n", a, page, cp.token, cp.token)
	default:
		fmt.Fprintf(w, "control %-22s dashboard: %s?token=TOKEN   (the --control-token)\n", a, page)
	}
}

// parseSize parses a byte size: 1048576, 512KB, 10MB, 1GB (powers of 1024;
// KiB, MiB, GiB too).
func parseSize(s string) (int64, error) {
	t := strings.ToUpper(strings.TrimSpace(s))
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KIB", 1 << 10}, {"MIB", 1 << 20}, {"GIB", 1 << 30}, {"KB", 1 << 10}, {"MB", 1 << 20}, {"GB", 1 << 30}, {"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"B", 1}} {
		if rest, ok := strings.CutSuffix(t, u.suffix); ok {
			t, mult = strings.TrimSpace(rest), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n <= 0 {
		return 0, errors.New("not a size (want e.g. 500KB, 10MB)")
	}
	return n * mult, nil
}

// deviceBlockedMax is how many blocked requests the device page lists.
const deviceBlockedMax = 10

// deviceBlocked returns the device's last blocked requests, newest first.
func deviceBlocked(h *control.Hub, client netip.Addr) []proxy.BlockedInfo {
	if !client.IsValid() {
		return nil
	}
	evs := h.Ring().Recent(control.Filter{Device: client.Unmap().String(), Blocked: true}, deviceBlockedMax)
	out := make([]proxy.BlockedInfo, 0, len(evs))
	for i := len(evs) - 1; i >= 0; i-- {
		e := evs[i]
		out = append(out, proxy.BlockedInfo{Time: e.Time, Target: e.Target, Layer: e.Layer, Outcome: e.Outcome, Scenario: e.Scenario, Rule: e.Rule})
	}
	return out
}
