package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/chaos-unicorn/unicorn/dnsblock"
	"github.com/chaos-unicorn/unicorn/router"
	"github.com/chaos-unicorn/unicorn/rules"
	"github.com/urfave/cli/v2"
)

// serveParts is what serveWith hands to router mode.
type serveParts struct {
	engine *rules.Engine
	dns    *dnsblock.Server
	lns    *listeners
	log    *slog.Logger
	// clients is whom the DNS server and the listeners serve.
	clients rules.ClientSet
}

func (l *listeners) listenTransparent(addr string) error {
	// No keep-alive probes of unicorn's own on the devices' connections:
	// they are the devices' business, and each costs syscalls per accept.
	ln, err := (&net.ListenConfig{KeepAlive: -1}).Listen(context.Background(), "tcp", addr)
	if err != nil {
		return listenErr("--transparent", addr, err)
	}
	l.transparent = append(l.transparent, ln)
	return nil
}

// encryptedDNSService is the built-in service of known DNS-over-HTTPS and
// DNS-over-TLS endpoints.
const encryptedDNSService = "encrypted-dns"

// encryptedDNS reports whether a name belongs to the encrypted-dns
// service of the rules in force (its domains and hosts), for logging
// devices that resolve past unicorn.
func encryptedDNS(e *rules.Engine) func(string) bool {
	return func(host string) bool {
		svc := e.Set().Services[encryptedDNSService]
		if svc == nil {
			return false
		}
		host = strings.ToLower(strings.TrimSuffix(host, "."))
		for _, h := range svc.Hosts() {
			if h == host {
				return true
			}
		}
		for _, d := range svc.Domains() {
			if host == d || strings.HasSuffix(host, "."+d) {
				return true
			}
		}
		return false
	}
}

func routerCommand() *cli.Command {
	up := serveCommand()
	up.Name, up.Action = "up", routerUp
	up.Usage = "make this machine the LAN's gateway and resolver, with the active scenarios applied to all of its traffic"
	up.Description = `Runs unicorn (as serve does) and installs one nftables table, inet unicorn,
that forwards and NATs the traffic of the LAN interface, redirects its TCP
to the transparent listener and all its DNS (UDP and TCP port 53, whatever
resolver a device uses) to unicorn's DNS, and rejects or drops the UDP and
other traffic the active rules block, including addresses learned from DNS
for blocked names. Devices need no proxy setting: give them this machine as
gateway and DNS (a hotspot does). Linux and root only.

The table is removed, and forwarding restored, on exit (Ctrl-C, SIGTERM), by
a guard process if unicorn crashes, by 'unicorn router down', and when --ttl
passes without 'unicorn router renew'. --dry-run prints the table instead.`
	for _, f := range up.Flags {
		if sf, ok := f.(*cli.StringSliceFlag); ok {
			switch sf.Name {
			case "dns":
				// Not 53: the table redirects the LAN's port 53 here, and
				// a hotspot's or the system's own resolver may hold 53.
				sf.Value = cli.NewStringSlice("[::]:15353")
			case "transparent":
				sf.Value = cli.NewStringSlice("[::]:15001")
			}
		}
	}
	up.Flags = append(up.Flags,
		&cli.StringFlag{Name: "lan", Required: true, Usage: "the LAN `IFACE` the devices are on (e.g. wlan0 of a hotspot, br-lan)"},
		&cli.DurationFlag{Name: "ttl", Value: router.DefaultTTL, Usage: "revert everything after this `DURATION` unless renewed (unicorn router renew)"},
		&cli.BoolFlag{Name: "dry-run", Usage: "print the nftables table that would be installed, and exit"},
	)
	return &cli.Command{
		Name:  "router",
		Usage: "router mode (Linux, root): every packet of a LAN passes unicorn",
		Subcommands: []*cli.Command{
			up,
			{
				Name:   "down",
				Usage:  "remove unicorn's nftables table, restore forwarding and stop the router process",
				Action: routerDown,
			},
			{
				Name:   "status",
				Usage:  "say whether router mode is on, for which LAN and until when",
				Flags:  []cli.Flag{&cli.BoolFlag{Name: "ruleset", Usage: "also print the installed table"}},
				Action: routerStatus,
			},
			{
				Name:   "renew",
				Usage:  "start router mode's time limit (--ttl) again",
				Action: routerRenew,
			},
			{
				Name:   "guard",
				Hidden: true,
				Usage:  "crash guard: remove the table with --id when standard input closes",
				Flags:  []cli.Flag{&cli.StringFlag{Name: "id", Required: true}},
				Action: routerGuard,
			},
		},
	}
}

// firstPort is the port of the first address in addrs.
func firstPort(flag string, addrs []string) (uint16, error) {
	if len(addrs) == 0 {
		return 0, cli.Exit(fmt.Sprintf("router mode needs a %s address", flag), 2)
	}
	_, ps, err := net.SplitHostPort(addrs[0])
	n, perr := strconv.ParseUint(ps, 10, 16)
	if err != nil || perr != nil || n == 0 {
		return 0, cli.Exit(fmt.Sprintf("%s %q: router mode needs a fixed port (e.g. [::]:15353)", flag, addrs[0]), 2)
	}
	return uint16(n), nil
}

func routerUp(c *cli.Context) error {
	if runtime.GOOS != "linux" {
		return cli.Exit("router mode needs Linux (nftables and conntrack)", 1)
	}
	dnsPort, err := firstPort("--dns", nonEmpty(c.StringSlice("dns")))
	if err != nil {
		return err
	}
	tPort, err := firstPort("--transparent", nonEmpty(c.StringSlice("transparent")))
	if err != nil {
		return err
	}
	if c.Bool("dry-run") {
		engine, err := newEngine(c)
		if err != nil {
			return err
		}
		r, err := router.New(router.Config{
			LAN: c.String("lan"), TransparentPort: tPort, DNSPort: dnsPort, Engine: engine, TTL: c.Duration("ttl"),
			Lookup: func(context.Context, string) ([]netip.Addr, error) { return nil, errors.New("dry run") },
		})
		if err != nil {
			return cli.Exit(err.Error(), 2)
		}
		fmt.Fprint(c.App.Writer, r.Ruleset())
		return nil
	}
	if os.Geteuid() != 0 {
		return cli.Exit("router mode changes the firewall: run it as root (sudo unicorn router up ...), or see the table first with --dry-run", 1)
	}
	if _, err := net.InterfaceByName(c.String("lan")); err != nil {
		return cli.Exit(fmt.Sprintf("--lan %s: %v (list interfaces with: ip link)", c.String("lan"), err), 2)
	}
	// Before any port is opened: a second router up should hear that the
	// first one runs, not that its ports are taken. (Up checks again.)
	if m, _, err := router.Installed(router.NFT{}); err == nil {
		return cli.Exit(fmt.Sprintf("router mode is already on (pid %d, LAN %s, until %s); stop it first with `unicorn router down`",
			m.PID, m.LAN, m.Expires.Local().Format(time.DateTime)), 1)
	}
	return serveWith(c, func(p serveParts) (func(context.Context) error, error) {
		r, err := router.New(router.Config{
			LAN: c.String("lan"), TransparentPort: tPort, DNSPort: dnsPort,
			Engine: p.engine, Lookup: p.dns.Lookup, TTL: c.Duration("ttl"), Logger: p.log,
		})
		if err != nil {
			return nil, cli.Exit(err.Error(), 2)
		}
		if lan, err := net.InterfaceByName(c.String("lan")); err == nil {
			if addrs, err := lan.Addrs(); err == nil {
				for _, n := range lanNotServed(addrs, p.clients) {
					p.log.Warn("the LAN's devices are not among the clients unicorn serves: their DNS questions and connections will be refused",
						"lan", c.String("lan"), "network", n, "fix", "add --allow-clients "+n)
				}
			}
		}
		guard, err := startGuard(r.ID())
		if err != nil {
			return nil, err
		}
		if err := r.Up(); err != nil {
			guard.stop()
			return nil, cli.Exit(err.Error(), 1)
		}
		p.dns.OnBlocked(func(client netip.Addr, name string, _ rules.Decision) { r.Learn(client, name) })
		fmt.Fprintf(c.App.Writer, "router LAN %s: gateway and DNS for its devices until %s (unicorn router renew | down)\n",
			c.String("lan"), time.Now().Add(c.Duration("ttl")).Format(time.DateTime))
		return func(ctx context.Context) error {
			defer guard.stop()
			usr1 := make(chan os.Signal, 1)
			signal.Notify(usr1, syscall.SIGUSR1)
			defer signal.Stop(usr1)
			done := make(chan error, 1)
			go func() { done <- r.Run(ctx) }()
			for {
				select {
				case err := <-done:
					if errors.Is(err, router.ErrExpired) {
						return nil // reverted as asked: a clean exit
					}
					return err
				case <-usr1:
					r.Renew()
				}
			}
		}, nil
	})
}

// lanNotServed lists the LAN's networks (from the interface's addresses,
// link-local ones aside) that clients leaves out: a LAN on public or
// documentation addresses, or with a global IPv6 prefix, needs
// --allow-clients, or unicorn refuses every device on it.
func lanNotServed(addrs []net.Addr, clients rules.ClientSet) []string {
	var out []string
	for _, a := range addrs {
		n, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		ip, ok := netip.AddrFromSlice(n.IP)
		if !ok {
			continue
		}
		ip = ip.Unmap()
		if ip.IsLinkLocalUnicast() || ip.IsLoopback() {
			continue
		}
		bits, _ := n.Mask.Size()
		if ip.Is4() && bits > 32 {
			bits -= 96
		}
		p, err := ip.Prefix(bits)
		if err != nil || clients.Contains(ip) {
			continue
		}
		out = append(out, p.String())
	}
	return out
}

// guardProc is the crash guard process.
type guardProc struct {
	cmd *exec.Cmd
	w   *os.File
}

// startGuard starts `unicorn router guard --id ID` with a pipe on its
// standard input that only this process holds open: when this process
// ends, however it ends, the guard sees the pipe close and removes the
// table if it is still this one. It runs in a process group of its own,
// so that Ctrl-C reaches only this process, which cleans up itself.
func startGuard(id string) (*guardProc, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("crash guard: %w", err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("crash guard: %w", err)
	}
	cmd := exec.Command(exe, "router", "guard", "--id", id)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = r, os.Stderr, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		r.Close()
		w.Close()
		return nil, fmt.Errorf("crash guard: %w", err)
	}
	r.Close()
	return &guardProc{cmd: cmd, w: w}, nil
}

// stop closes the pipe (the guard finds the table gone and exits) and
// waits a bounded time for it.
func (g *guardProc) stop() {
	g.w.Close()
	done := make(chan struct{})
	go func() {
		g.cmd.Wait()
		close(done)
	}()
	t := time.NewTimer(5 * time.Second)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		g.cmd.Process.Kill()
		<-done
	}
}

func routerGuard(c *cli.Context) error {
	signal.Ignore(os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	removed, err := router.Guard(os.Stdin, c.String("id"), router.NFT{})
	if removed {
		fmt.Fprintln(c.App.ErrWriter, "unicorn router guard: the router process ended without cleaning up; removed table inet unicorn and restored forwarding")
	}
	return err
}

func routerDown(c *cli.Context) error {
	if err := needRoot("down"); err != nil {
		return err
	}
	meta, err := router.Down(router.NFT{})
	if errors.Is(err, router.ErrNoTable) {
		fmt.Fprintln(c.App.Writer, "router mode is off: no unicorn table installed")
		return nil
	}
	if err != nil {
		return cli.Exit(fmt.Sprintf("router down: %v", err), 1)
	}
	fmt.Fprintf(c.App.Writer, "removed table inet unicorn (LAN %s) and restored forwarding\n", meta.LAN)
	if ownerAlive(meta.PID) {
		syscall.Kill(meta.PID, syscall.SIGTERM)
		fmt.Fprintf(c.App.Writer, "stopped unicorn router up (pid %d)\n", meta.PID)
	}
	return nil
}

// needRoot says that reading or changing the firewall needs root, and
// nft.
func needRoot(cmd string) error {
	if os.Geteuid() != 0 {
		return cli.Exit(fmt.Sprintf("unicorn router %s reads the firewall (nftables): run it as root (sudo unicorn router %s)", cmd, cmd), 1)
	}
	if err := (router.NFT{}).Check(); err != nil {
		return cli.Exit(fmt.Sprintf("unicorn router %s: %v", cmd, err), 1)
	}
	return nil
}

func routerStatus(c *cli.Context) error {
	if err := needRoot("status"); err != nil {
		return err
	}
	meta, listing, err := router.Installed(router.NFT{})
	if errors.Is(err, router.ErrNoTable) {
		fmt.Fprintln(c.App.Writer, "router mode is off")
		return nil
	}
	if err != nil {
		return cli.Exit(fmt.Sprintf("router status: %v", err), 1)
	}
	state := "running"
	if !ownerAlive(meta.PID) {
		state = "NOT running (the table is left over: unicorn router down removes it)"
	}
	fmt.Fprintf(c.App.Writer, "router mode is on: LAN %s, unicorn pid %d %s, reverts at %s (in %s)\n",
		meta.LAN, meta.PID, state, meta.Expires.Local().Format(time.DateTime), time.Until(meta.Expires).Round(time.Second))
	if c.Bool("ruleset") {
		fmt.Fprint(c.App.Writer, listing)
	}
	return nil
}

func routerRenew(c *cli.Context) error {
	if err := needRoot("renew"); err != nil {
		return err
	}
	meta, _, err := router.Installed(router.NFT{})
	if errors.Is(err, router.ErrNoTable) {
		return cli.Exit("router mode is off: nothing to renew", 1)
	}
	if err != nil {
		return cli.Exit(fmt.Sprintf("router renew: %v", err), 1)
	}
	if !ownerAlive(meta.PID) {
		return cli.Exit(fmt.Sprintf("the router process (pid %d) is not running; remove the table with unicorn router down", meta.PID), 1)
	}
	if err := syscall.Kill(meta.PID, syscall.SIGUSR1); err != nil {
		return cli.Exit(fmt.Sprintf("router renew: %v", err), 1)
	}
	fmt.Fprintf(c.App.Writer, "renewed router mode (pid %d)\n", meta.PID)
	return nil
}

// ownerAlive reports whether pid is a running unicorn process, so that a
// pid from the table's comment that the system has reused is never
// signalled.
func ownerAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	args := strings.Split(string(b), "\x00")
	return len(args) >= 3 && strings.Contains(args[0], "unicorn") && args[1] == "router" && args[2] == "up"
}
