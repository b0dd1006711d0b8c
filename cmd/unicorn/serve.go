package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/chaos-unicorn/unicorn/certs"
	"github.com/chaos-unicorn/unicorn/dnsblock"
	"github.com/chaos-unicorn/unicorn/proxy"
	"github.com/chaos-unicorn/unicorn/rules"
	"github.com/urfave/cli/v2"
)

func serveCommand() *cli.Command {
	return &cli.Command{
		Name:  "serve",
		Usage: "run the DNS sinkhole and the HTTP(S) proxy with the active scenarios",
		Description: `Listens for DNS (UDP and TCP) and HTTP proxy requests (plain and CONNECT), and
with --socks for SOCKS5 (CONNECT and UDP ASSOCIATE, for apps that honour ALL_PROXY),
and answers them all from the active scenarios; SIGHUP, or a change to a --rules
file, reloads the rules (a file with errors is refused, each error logged,
and the rules in force stay; switches survive a reload). The control API
and dashboard (--control, default 127.0.0.1:8053) switch scenarios at run
time and show every blocked request.
Serves loopback and private-range
clients only unless --allow-clients says otherwise. Listen on a LAN address
(e.g. --dns 0.0.0.0:53 --proxy 0.0.0.0:8080) so that phones can reach it;
port 53 needs root or the cap_net_bind_service capability.`,
		Flags: append(append(ruleFlags(),
			&cli.StringSliceFlag{Name: "dns", Value: cli.NewStringSlice("127.0.0.1:5353"), Usage: "DNS listen `ADDR` (UDP and TCP; repeatable; IPv6 as [::1]:5353; \"\" to disable)"},
			&cli.StringSliceFlag{Name: "proxy", Value: cli.NewStringSlice("127.0.0.1:8080"), Usage: "HTTP proxy listen `ADDR` (repeatable; \"\" to disable)"},
			&cli.StringSliceFlag{Name: "socks", Usage: "SOCKS5 listen `ADDR` (CONNECT and UDP ASSOCIATE, no authentication, same rules and clients as the proxy; repeatable; default off, e.g. 127.0.0.1:1080)"},
			&cli.StringSliceFlag{Name: "transparent", Usage: "transparent TCP listen `ADDR` for connections the firewall redirects (router mode; Linux; repeatable)"},
			&cli.StringSliceFlag{Name: "upstream", Usage: "upstream resolver `ADDR` (repeatable, tried in order; no port means 53; default: the system's from /etc/resolv.conf)"},
			&cli.StringSliceFlag{Name: "allow-clients", Usage: "serve only clients in `CIDR` (repeatable; default: loopback, private and link-local ranges)"},
			&cli.DurationFlag{Name: "upstream-timeout", Value: 2 * time.Second, Usage: "answer SERVFAIL when the upstreams have not answered within this `DURATION`"},
			&cli.DurationFlag{Name: "blackhole-timeout", Value: 60 * time.Second, Usage: "close a blackholed proxy connection after this `DURATION` of silence"},
			&cli.StringFlag{Name: "upstream-ca", Usage: "also trust the certificates in PEM `FILE` when unicorn itself talks TLS to an upstream (intercepted hosts; for test servers)"},
			&cli.StringFlag{Name: "ca-dir", Usage: "local CA `DIR` made by `unicorn ca init` (default $UNICORN_HOME, else the user config directory + /unicorn)"},
			&cli.Uint64Flag{Name: "seed", Usage: "seed `N` of the rules' random outcomes (probability:, jitter); the same seed and traffic give the same faults (logged and printed at start)", DefaultText: "random", EnvVars: []string{"UNICORN_SEED"}},
			&cli.StringFlag{Name: "log-format", Value: "text", Usage: "log as `text` or json (to stderr)"},
			&cli.StringFlag{Name: "log-level", Value: "info", Usage: "log `LEVEL`: debug, info, warn, error"},
		), controlFlags()...),
		Action: serve,
	}
}

func newLogger(c *cli.Context) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.String("log-level"))); err != nil {
		return nil, cli.Exit(fmt.Sprintf("--log-level %q: want debug, info, warn or error", c.String("log-level")), 2)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch c.String("log-format") {
	case "text":
		return slog.New(slog.NewTextHandler(c.App.ErrWriter, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(c.App.ErrWriter, opts)), nil
	}
	return nil, cli.Exit(fmt.Sprintf("--log-format %q: want text or json", c.String("log-format")), 2)
}

func serve(c *cli.Context) error { return serveWith(c, nil) }

// serveWith is serve, with extra (router mode, router.go), if set, called
// once everything listens and before anything is served; the function it
// returns then runs beside the servers until the context ends, and its
// return ends serving too.
func serveWith(c *cli.Context, extra func(serveParts) (func(context.Context) error, error)) error {
	log, err := newLogger(c)
	if err != nil {
		return err
	}
	engine, err := newEngine(c)
	if err != nil {
		return err
	}
	// A short random seed by default: easy to copy from the banner, and
	// exact in JSON logs read as doubles.
	seed := rand.Uint64N(1 << 31)
	if c.IsSet("seed") {
		seed = c.Uint64("seed")
	}
	engine.SetSeed(seed)
	clients, err := clientSet(c.StringSlice("allow-clients"))
	if err != nil {
		return err
	}
	dnsAddrs, proxyAddrs, socksAddrs := nonEmpty(c.StringSlice("dns")), nonEmpty(c.StringSlice("proxy")), nonEmpty(c.StringSlice("socks"))
	if len(dnsAddrs) == 0 && len(proxyAddrs) == 0 && len(socksAddrs) == 0 {
		return cli.Exit("nothing to serve: give --dns, --proxy or --socks an address", 2)
	}

	// Listen on everything before serving anything, so that a port in use
	// fails the start and not half of it.
	var lns listeners
	defer lns.closeAll()
	for _, a := range dnsAddrs {
		if err := lns.listenDNS(a); err != nil {
			return err
		}
	}
	for _, a := range proxyAddrs {
		if err := lns.listenProxy(a); err != nil {
			return err
		}
	}
	for _, a := range socksAddrs {
		if err := lns.listenSOCKS(a); err != nil {
			return err
		}
	}
	for _, a := range nonEmpty(c.StringSlice("transparent")) {
		if err := lns.listenTransparent(a); err != nil {
			return err
		}
	}
	upstreams, err := upstreamList(c.StringSlice("upstream"), lns.dnsAddrs())
	if err != nil {
		return err
	}
	cp, err := newControlPlane(c, engine, log)
	if err != nil {
		return err
	}
	defer cp.close()

	ca := serveCA(c, log)
	upstreamRoots, err := upstreamCAs(c.String("upstream-ca"))
	if err != nil {
		return err
	}

	// One DNS server answers on every --dns address, with one cache and
	// one name memory, and resolves the proxy's allowed hosts; with no
	// --dns it does only that.
	dnsSrv, err := dnsblock.NewServer(dnsblock.Config{
		Decider: engine, Upstreams: upstreams, Timeout: c.Duration("upstream-timeout"),
		Clients: clients, Logger: log,
	})
	if err != nil {
		return err
	}
	px, err := proxy.New(proxy.Config{
		Decider:          engine,
		Lookup:           dnsSrv.Lookup,
		CA:               ca, // nil: rules that need interception pass untouched
		UpstreamRoots:    upstreamRoots,
		Clients:          clients,
		BlackholeTimeout: c.Duration("blackhole-timeout"),
		Logger:           log,
		Info: func(client netip.Addr) proxy.PageInfo {
			info := pageInfo(engine, cp, ca, client, lns.proxyAddrs(), lns.dnsAddrs())
			info.SOCKSAddrs = lns.socksAddrs()
			return info
		},
		Names:        dnsSrv.Names().Lookup,
		EncryptedDNS: encryptedDNS(engine),
	})
	if err != nil {
		return err
	}
	// SOCKS decides like the proxy's CONNECT; a request by address is also
	// decided by the name the DNS front end answered it for.
	sx := px.SOCKS(proxy.SOCKSConfig{Names: dnsSrv.Names().Lookup})
	var extraRun func(context.Context) error
	if extra != nil {
		if extraRun, err = extra(serveParts{engine: engine, dns: dnsSrv, lns: &lns, log: log, clients: clients}); err != nil {
			return err
		}
	}

	if err := cp.start(engine, log, dnsSrv, px); err != nil {
		return err
	}
	printBanner(c.App.Writer, engine, cp, lns, upstreams, clients)
	log.Info("serving", "scenarios", activeNames(engine), "upstreams", upstreams, "clients", clients.String(), "seed", engine.Seed(), "socks", strings.Join(lns.socksAddrs(), " "))

	ctx, cancel := context.WithCancel(c.Context)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		reloadOnHangup(ctx, c, engine, cp.reloads, log)
	}()
	errc := make(chan error, 3+len(lns.proxy)+len(lns.socks)+len(lns.transparent))
	if cp.ln != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errc <- cp.serve()
		}()
	}
	if len(lns.udp) > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errc <- dnsSrv.ServeAll(ctx, lns.udp, lns.tcp)
		}()
	}
	for _, l := range lns.proxy {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errc <- px.Serve(l)
		}()
	}
	for _, l := range lns.socks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errc <- sx.Serve(l)
		}()
	}
	for _, l := range lns.transparent {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errc <- px.ServeTransparent(l)
		}()
	}
	if extraRun != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errc <- extraRun(ctx)
		}()
	}
	var first error
	select {
	case <-ctx.Done():
		log.Info("stopping")
	case first = <-errc:
		if first != nil {
			log.Error("stopping", "err", first)
		}
	}
	cancel()
	cp.close()
	px.Close()
	dnsSrv.Shutdown()
	wg.Wait()
	return first
}

// listeners holds every socket serve opened, in flag order.
type listeners struct {
	udp         []net.PacketConn
	tcp         []net.Listener // DNS over TCP, one per udp
	proxy       []net.Listener
	socks       []net.Listener
	transparent []net.Listener
}

func (l *listeners) listenDNS(addr string) error {
	_, port, _ := net.SplitHostPort(addr)
	// Port 0 lets the system pick a UDP port; TCP must take the same one,
	// which another program may hold: then pick again, a bounded number of times.
	tries := 1
	if port == "0" {
		tries = 20
	}
	var err error
	for range tries {
		var pc net.PacketConn
		if pc, err = net.ListenPacket("udp", addr); err != nil {
			return listenErr("--dns", addr, err)
		}
		var ln net.Listener
		if ln, err = net.Listen("tcp", pc.LocalAddr().String()); err == nil {
			l.udp, l.tcp = append(l.udp, pc), append(l.tcp, ln)
			return nil
		}
		pc.Close()
	}
	return listenErr("--dns", addr, err)
}

func (l *listeners) listenProxy(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return listenErr("--proxy", addr, err)
	}
	l.proxy = append(l.proxy, ln)
	return nil
}

func (l *listeners) listenSOCKS(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return listenErr("--socks", addr, err)
	}
	l.socks = append(l.socks, ln)
	return nil
}

func (l *listeners) socksAddrs() []string {
	var s []string
	for _, ln := range l.socks {
		s = append(s, ln.Addr().String())
	}
	return s
}

func (l *listeners) dnsAddrs() []string {
	var s []string
	for _, pc := range l.udp {
		s = append(s, pc.LocalAddr().String())
	}
	return s
}

func (l *listeners) proxyAddrs() []string {
	var s []string
	for _, ln := range l.proxy {
		s = append(s, ln.Addr().String())
	}
	return s
}

// closeAll closes what serve did not hand to a server; closing twice is harmless.
func (l *listeners) closeAll() {
	for _, pc := range l.udp {
		pc.Close()
	}
	for _, ln := range slices.Concat(l.tcp, l.proxy, l.socks, l.transparent) {
		ln.Close()
	}
}

// listenErr turns a listen failure into advice.
func listenErr(flag, addr string, err error) error {
	switch {
	case errors.Is(err, syscall.EACCES):
		return cli.Exit(fmt.Sprintf("cannot listen on %s (%s): permission denied.\n"+
			"Ports below 1024 need privileges: run as root, or grant the binary the capability once with\n"+
			"  sudo setcap cap_net_bind_service=+ep %s\n"+
			"or pick a port above 1023, e.g. %s %s", addr, flag, exePath(), flag, suggest(addr, flag)), 1)
	case errors.Is(err, syscall.EADDRINUSE):
		return cli.Exit(fmt.Sprintf("cannot listen on %s (%s): the address is already in use.\n"+
			"Stop the other program or pick another port, e.g. %s %s", addr, flag, flag, suggest(addr, flag)), 1)
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return cli.Exit(fmt.Sprintf("cannot listen on %s (%s): this machine has no such address.\n"+
			"Use one of its own addresses (ip addr), 127.0.0.1, or 0.0.0.0 for all", addr, flag), 1)
	}
	return cli.Exit(fmt.Sprintf("cannot listen on %s (%s): %v", addr, flag, err), 1)
}

func suggest(addr, flag string) string {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = "127.0.0.1"
	}
	port := "8080"
	switch flag {
	case "--dns":
		port = "5353"
	case "--control":
		port = "8054"
	case "--socks":
		port = "1080"
	}
	return net.JoinHostPort(host, port)
}

func exePath() string {
	if p, err := os.Executable(); err == nil {
		return p
	}
	return "$(which unicorn)"
}

func nonEmpty(list []string) []string {
	var out []string
	for _, s := range list {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

func clientSet(cidrs []string) (rules.ClientSet, error) {
	if len(cidrs) == 0 {
		return rules.DefaultClients(), nil
	}
	var ps []netip.Prefix
	for _, s := range cidrs {
		p, err := rules.ParsePrefix(s)
		if err != nil {
			return rules.ClientSet{}, cli.Exit(fmt.Sprintf("--allow-clients %q: not an address or CIDR (want e.g. 192.0.2.0/24)", s), 2)
		}
		ps = append(ps, p)
	}
	return rules.NewClientSet(ps...), nil
}

// upstreamList normalises --upstream, or reads the system's resolvers. It
// refuses unicorn's own DNS addresses: forwarding to itself would loop.
func upstreamList(flags []string, own []string) ([]string, error) {
	var ups []string
	if len(flags) == 0 {
		sys, err := dnsblock.SystemUpstreams("/etc/resolv.conf")
		if err != nil || len(sys) == 0 {
			return nil, cli.Exit(fmt.Sprintf("no upstream resolver: /etc/resolv.conf gave none (%v); give one with --upstream ADDR", err), 2)
		}
		flags = sys
	}
	for _, f := range flags {
		u, err := dnsblock.NormalizeUpstream(f)
		if err != nil {
			return nil, cli.Exit(fmt.Sprintf("--upstream %q: %v", f, err), 2)
		}
		if isOwn(u, own) {
			return nil, cli.Exit(fmt.Sprintf("--upstream %s is unicorn's own DNS address: questions would loop; name a real resolver (with --dns on 0.0.0.0 or ::, a resolv.conf naming this machine counts too)", u), 2)
		}
		ups = append(ups, u)
	}
	return ups, nil
}

// isOwn reports whether upstream u is one of unicorn's own DNS listeners:
// the same address, or, for a wildcard listener, any address of this
// machine on the same port.
func isOwn(u string, own []string) bool {
	ua, err := netip.ParseAddrPort(u)
	if err != nil {
		return false
	}
	for _, o := range own {
		oa, err := netip.ParseAddrPort(o)
		if err != nil || oa.Port() != ua.Port() {
			continue
		}
		if oa.Addr().Unmap() == ua.Addr().Unmap() {
			return true
		}
		if oa.Addr().IsUnspecified() && localAddr(ua.Addr()) {
			return true
		}
	}
	return false
}

// localAddr reports whether a is an address of this machine.
func localAddr(a netip.Addr) bool {
	a = a.Unmap()
	if a.IsLoopback() || a.IsUnspecified() {
		return true
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, ia := range addrs {
		if p, err := netip.ParsePrefix(ia.String()); err == nil && p.Addr().Unmap() == a {
			return true
		}
	}
	return false
}

func activeNames(e *rules.Engine) []string {
	var names []string
	for _, sc := range e.Active() {
		names = append(names, sc.Name)
	}
	return names
}

// pageInfo is what the device page shows the device at client: the
// scenarios on for it with a rule that applies to it, and their services.
func pageInfo(e *rules.Engine, cp *controlPlane, ca *certs.CA, client netip.Addr, proxyAddrs, dnsAddrs []string) proxy.PageInfo {
	info := proxy.PageInfo{ProxyAddrs: proxyAddrs, DNSAddrs: dnsAddrs}
	if ca != nil { // a nil *certs.CA in the interface would not be nil
		info.CA = ca
	}
	for _, st := range e.Scenarios() {
		if !st.AppliesToClient(client) {
			continue
		}
		sc := st.Scenario
		var services []string
		applies := false
		for _, r := range sc.Rules {
			if !r.AppliesToClient(client) {
				continue
			}
			applies = true
			if r.Service != "" && !slices.Contains(services, r.Service) {
				services = append(services, r.Service)
			}
		}
		if applies {
			until, _ := cp.switches.RevertAt(sc.Name)
			info.Scenarios = append(info.Scenarios, proxy.ScenarioInfo{Name: sc.Name, Description: sc.Description, Services: services, Until: until})
		}
	}
	info.Blocked = deviceBlocked(cp.hub, client)
	return info
}

// printBanner tells the user what to point devices and tools at.
func printBanner(w io.Writer, e *rules.Engine, cp *controlPlane, l listeners, upstreams []string, clients rules.ClientSet) {
	fmt.Fprintf(w, "unicorn %s: scenarios %s; seed %d (repeat with --seed %d)\n", version, strings.Join(activeNames(e), ", "), e.Seed(), e.Seed())
	cp.banner(w) // before the DNS and proxy lines: testbed waits for those
	for _, a := range l.dnsAddrs() {
		host, port, _ := net.SplitHostPort(a)
		fmt.Fprintf(w, "DNS    %-22s try: dig @%s -p %s mainnet.infura.io\n", a, host, port)
	}
	for _, a := range l.proxyAddrs() {
		fmt.Fprintf(w, "proxy  %-22s try: curl -x http://%s https://api.etherscan.io/   (page: http://%s/)\n", a, a, a)
	}
	for _, a := range l.socksAddrs() {
		fmt.Fprintf(w, "socks  %-22s try: curl --socks5-hostname %s https://api.etherscan.io/\n", a, a)
	}
	for _, ln := range l.transparent {
		fmt.Fprintf(w, "transparent %s   (router mode: the firewall redirects the LAN's TCP here)\n", ln.Addr())
	}
	fmt.Fprintf(w, "upstream resolvers %s; serving clients %s\n", strings.Join(upstreams, ", "), clients)
	fmt.Fprintln(w, "Ctrl-C stops.")
}
