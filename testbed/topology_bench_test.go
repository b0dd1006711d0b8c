package testbed

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The bench's servers in Inet, on the site's address.
const (
	benchSinkPort  = "9000" // TCP: reads to EOF, then answers "ok"
	benchQuickPort = "9001" // TCP: reads one byte, answers one, closes (connection rate)
	benchUDPPort   = "9002" // UDP: counts bytes
	benchHTTPSPort = "8443" // HTTPS: GET /big?n=BYTES
)

// TestRouterThroughput measures router mode against plain kernel
// forwarding, and against forwarding with NAT, in the same topology,
// interleaved (the order of the modes turns each round, so that a drift
// of the machine's load spreads over all of them): raw TCP and HTTPS
// download through the transparent listener, TCP connection rate, and
// forwarded UDP crossing the nftables sets. A fourth mode, a minimal Go
// relay (two io.Copy, kernel splice) in the router's namespace, shows
// what any userspace hop costs the TCP measurements, without and with
// conntrack (a fifth mode: the relay with the NAT baseline's table). It is a measurement,
// not a check: bench/router.sh (make bench) runs it with
// UNICORN_ROUTER_BENCH=1 and prints the ratios; under plain go test it is
// skipped. Each result is one line,
// "ROUTERBENCH name unicorn baseline ratio ratio_min ratio_max": the
// medians of both, then the median, lowest and highest of the per-round
// ratios (each round's modes ran back to back).
func TestRouterThroughput(t *testing.T) {
	if os.Getenv("UNICORN_ROUTER_BENCH") != "1" {
		t.Skip("a measurement: make bench runs it (bench/router.sh, UNICORN_ROUTER_BENCH=1)")
	}
	rounds := envInt("BENCH_ROUNDS", 3)
	rawBytes := int64(envInt("BENCH_ROUTER_RAW_MB", 2048)) << 20
	httpsBytes := int64(envInt("BENCH_ROUTER_HTTPS_MB", 1024)) << 20
	window := time.Duration(envInt("BENCH_ROUTER_SECONDS", 3)) * time.Second

	topo := NewTopology(t)
	startBenchServers(t, topo)
	// The NAT baseline translates to an address of its own: sharing the
	// router's address with unicorn's own connections would leave the
	// server TIME_WAIT entries whose timestamps refuse unicorn's next
	// connections from the same ports (PAWS), which is the bench's doing.
	topo.Router.IP(t, "addr", "add", benchNATAddr+"/24", "dev", TopoWAN)
	ctx := context.Background()
	sink := net.JoinHostPort(SiteAddr4, benchSinkPort)
	quick := net.JoinHostPort(SiteAddr4, benchQuickPort)
	udp := net.JoinHostPort(SiteAddr4, benchUDPPort)
	https := net.JoinHostPort(SiteAddr4, benchHTTPSPort)
	big := "https://" + https + "/big?n=" + strconv.FormatInt(httpsBytes, 10)
	relays := startBenchRelays(t, topo, sink, quick, https)
	t.Logf("load average at start: %s", loadavg())

	res := map[string]map[string][]float64{} // metric -> mode -> values (one per round)
	note := func(metric, mode string, v float64) {
		if res[metric] == nil {
			res[metric] = map[string][]float64{}
		}
		res[metric][mode] = append(res[metric][mode], v)
		t.Logf("%s %s: %.4g", metric, mode, v)
	}
	// cpu notes the CPU seconds the bench process (clients, servers and
	// the Go relay) and unicorn (pid, 0: none) spent per unit of work.
	cpu := map[string]map[string][2][]float64{} // metric -> mode -> {self, unicorn}
	timed := func(metric, mode string, pid int, units func(v float64) float64, f func() (float64, error)) (float64, error) {
		s0, u0 := selfCPU(), procCPU(pid)
		v, err := f()
		if err == nil && units(v) > 0 {
			if cpu[metric] == nil {
				cpu[metric] = map[string][2][]float64{}
			}
			c := cpu[metric][mode]
			c[0] = append(c[0], (selfCPU()-s0)/units(v))
			c[1] = append(c[1], (procCPU(pid)-u0)/units(v))
			cpu[metric][mode] = c
		}
		return v, err
	}
	gb := func(n int64) func(float64) float64 { return func(float64) float64 { return float64(n) / 1e9 } }
	conns := func(v float64) float64 { return v * window.Seconds() / 1e6 } // CPU µs per connection
	// measure runs every measurement; to, when not nil, maps the
	// destination a device dials onto the address it really dials (the
	// relay's), keeping the TLS name and URL as they are.
	measure := func(mode string, pid int, to map[string]string) {
		dst := func(a string) string {
			if to[a] != "" {
				return to[a]
			}
			return a
		}
		if v, err := timed("raw_tcp_gbit", mode, pid, gb(rawBytes), func() (float64, error) {
			return rawTCP(ctx, topo.Phone, dst(sink), rawBytes)
		}); err != nil {
			t.Errorf("%s raw TCP: %v", mode, err)
		} else {
			note("raw_tcp_gbit", mode, v)
		}
		if v, err := timed("https_gbit", mode, pid, gb(httpsBytes), func() (float64, error) {
			return httpsDownload(topo.Phone, dst(https), big, httpsBytes)
		}); err != nil {
			t.Errorf("%s HTTPS: %v", mode, err)
		} else {
			note("https_gbit", mode, v)
		}
		if v, err := timed("tcp_conn_per_s", mode, pid, conns, func() (float64, error) {
			return connRate(ctx, topo.Phone, dst(quick), window)
		}); err != nil {
			t.Errorf("%s connection rate: %v", mode, err)
		} else {
			note("tcp_conn_per_s", mode, v)
		}
		if to != nil {
			return // the relay is for TCP; its UDP is the baseline's
		}
		if v, err := udpRate(ctx, topo, udp, window); err != nil {
			t.Errorf("%s UDP: %v", mode, err)
		} else {
			note("udp_gbit", mode, v)
		}
	}
	modes := []func(){
		func() {
			topo.Forward(t)
			measure("baseline", 0, nil)
		},
		func() {
			// What any home router does besides forwarding: NAT, which
			// router mode does too (conntrack on every packet).
			topo.Forward(t)
			topo.Router.Sh(t, "nft -f - <<'EOF'\n"+benchNAT+"EOF")
			measure("nat", 0, nil)
			topo.Router.Sh(t, "nft delete table inet benchnat")
		},
		func() {
			// router up turns forwarding on itself and restores it (to on) on exit.
			u := topo.StartRouter(t, "--log-level", "warn")
			measure("unicorn", u.Pid(), nil)
			if err := u.Stop(); err != nil {
				t.Fatalf("stopping router mode: %v", err)
			}
			if topo.Table(t) != "" {
				t.Fatalf("router mode left its table")
			}
		},
		func() {
			topo.Forward(t)
			measure("relay", 0, relays)
		},
		func() {
			// The same relay with conntrack on, as router mode has it
			// (its redirect and NAT need it): the cost of tracking both
			// connections of the hop.
			topo.Forward(t)
			topo.Router.Sh(t, "nft -f - <<'EOF'\n"+benchNAT+"EOF")
			measure("relay_nat", 0, relays)
			topo.Router.Sh(t, "nft delete table inet benchnat")
		},
	}
	for i := range rounds {
		for j := range modes {
			modes[(i+j)%len(modes)]()
		}
	}
	t.Logf("load average at end: %s", loadavg())
	for _, m := range []string{"raw_tcp_gbit", "https_gbit", "tcp_conn_per_s", "udp_gbit"} {
		for _, base := range []string{"baseline", "nat", "relay", "relay_nat"} {
			b := res[m][base]
			if len(b) == 0 {
				continue
			}
			name := m
			if base != "baseline" {
				name += "_vs_" + base
			}
			r := ratios(res[m]["unicorn"], b)
			fmt.Printf("ROUTERBENCH %s %.4g %.4g %.3f %.3f %.3f\n", name, median(res[m]["unicorn"]), median(b),
				median(r), slices.Min(r), slices.Max(r))
		}
		for _, mode := range []string{"baseline", "nat", "unicorn", "relay", "relay_nat"} {
			if c := cpu[m][mode]; len(c[0]) > 0 {
				// CPU seconds per GB, or µs per connection.
				fmt.Printf("ROUTERCPU %s %s bench_process %.3g unicorn %.3g\n", m, mode, median(c[0]), median(c[1]))
			}
		}
		if b := res[m]["relay"]; len(b) > 0 {
			r := ratios(b, res[m]["baseline"])
			fmt.Printf("ROUTERBENCH %s_relay_vs_baseline %.4g %.4g %.3f %.3f %.3f\n", m, median(b), median(res[m]["baseline"]),
				median(r), slices.Min(r), slices.Max(r))
		}
	}
}

// ratios returns a[i]/b[i] for the rounds both have.
func ratios(a, b []float64) []float64 {
	var r []float64
	for i := range min(len(a), len(b)) {
		if b[i] > 0 {
			r = append(r, a[i]/b[i])
		}
	}
	if len(r) == 0 {
		r = []float64{0}
	}
	return r
}

// selfCPU is the CPU time (user and system) of this process, in seconds.
func selfCPU() float64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// procCPU is the CPU time of process pid (0: none), in seconds, from
// /proc/PID/stat (utime and stime, in clock ticks of 1/100 s).
func procCPU(pid int) float64 {
	if pid == 0 {
		return 0
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// The fields after the command name, which is in parentheses.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.Atoi(f[11])
	st, _ := strconv.Atoi(f[12])
	return float64(ut+st) / 100
}

// loadavg is the machine's load average, for the log: neighbours move
// the absolute numbers.
func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	return strings.TrimSpace(string(b))
}

// startBenchRelays starts, in the router's namespace, a minimal Go relay
// for each of targets: it accepts on the router's LAN address and relays
// to the target with two io.Copy between *net.TCPConn (kernel splice), as
// plain as a userspace hop gets. It returns target -> relay address.
func startBenchRelays(t *testing.T, topo *Topology, targets ...string) map[string]string {
	out := map[string]string{}
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)
	for i, target := range targets {
		l, err := topo.Router.Listen("tcp", net.JoinHostPort(RouterLAN4, strconv.Itoa(9100+i)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		out[target] = l.Addr().String()
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					defer c.Close()
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					up, err := topo.Router.DialContext(ctx, "tcp", target)
					cancel()
					if err != nil {
						return
					}
					defer up.Close()
					done := make(chan struct{})
					go func() {
						defer close(done)
						io.Copy(c.(*net.TCPConn), up.(*net.TCPConn))
						c.(*net.TCPConn).CloseWrite()
					}()
					io.Copy(up.(*net.TCPConn), c.(*net.TCPConn))
					up.(*net.TCPConn).CloseWrite()
					<-done
				}()
			}
		}()
	}
	return out
}

// benchNAT is forwarding with masquerade and nothing else, in a table of
// the bench's own.
const benchNAT = `table inet benchnat {
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		iifname "lan0" oifname != "lan0" snat ip to ` + benchNATAddr + `
	}
}
`

// benchNATAddr is the router's second WAN address, for the NAT baseline.
const benchNATAddr = "198.51.100.3"

func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	v = slices.Clone(v)
	slices.Sort(v)
	return v[(len(v)-1)/2]
}

// startBenchServers starts the bench's servers in Inet.
func startBenchServers(t *testing.T, topo *Topology) {
	listen := func(port string) net.Listener {
		l, err := topo.Inet.Listen("tcp", net.JoinHostPort(SiteAddr4, port))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		return l
	}
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)
	accept := func(l net.Listener, h func(net.Conn)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					defer c.Close()
					h(c)
				}()
			}
		}()
	}
	accept(listen(benchSinkPort), func(c net.Conn) {
		io.Copy(io.Discard, c)
		c.Write([]byte("ok"))
	})
	accept(listen(benchQuickPort), func(c net.Conn) {
		b := make([]byte, 1)
		if _, err := io.ReadFull(c, b); err == nil {
			c.Write(b)
		}
	})
	zeros := make([]byte, 256<<10)
	serveOn(t, listen(benchHTTPSPort), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.ParseInt(r.URL.Query().Get("n"), 10, 64)
		w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
		for n > 0 {
			k := min(n, int64(len(zeros)))
			if _, err := w.Write(zeros[:k]); err != nil {
				return
			}
			n -= k
		}
	}), TestCA().ServerConfig())
	// The UDP sink is a blocking socket read on a thread of its own,
	// pinned to the second CPU (see udpRate): as plain as a C sink, and
	// not the bottleneck of what it measures.
	var fd int
	if err := topo.Inet.Do(func() (err error) {
		fd, err = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 4<<20)
		sa := &unix.SockaddrInet4{Port: envIntOf(benchUDPPort)}
		copy(sa.Addr[:], net.ParseIP(SiteAddr4).To4())
		return unix.Bind(fd, sa)
	}); err != nil {
		t.Fatal(err)
	}
	var closed atomic.Bool
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer unix.Close(fd)
		pinThread(1)
		buf := make([]byte, 65536)
		for !closed.Load() {
			n, err := unix.Read(fd, buf)
			if err != nil && err != unix.EINTR {
				return
			}
			udpReceived.Add(int64(max(n, 0)))
		}
	}()
	t.Cleanup(func() {
		closed.Store(true)
		unix.Shutdown(fd, unix.SHUT_RD) // wakes the blocked read
	})
}

// envIntOf is the number s, which is known to be one.
func envIntOf(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

// udpReceived counts the bytes the bench's UDP sink received.
var udpReceived atomic.Int64

// rawTCP sends n bytes from n's namespace to the sink and returns Gbit/s,
// timed until the sink has read them all.
func rawTCP(ctx context.Context, ns *Netns, addr string, n int64) (float64, error) {
	c, err := ns.DialContext(ctx, "tcp", addr)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	buf := make([]byte, 128<<10)
	start := time.Now()
	for left := n; left > 0; {
		k := min(left, int64(len(buf)))
		if _, err := c.Write(buf[:k]); err != nil {
			return 0, err
		}
		left -= k
	}
	c.(*net.TCPConn).CloseWrite()
	if _, err := io.ReadFull(c, make([]byte, 2)); err != nil {
		return 0, err
	}
	return gbit(n, time.Since(start)), nil
}

// httpsDownload fetches u (n bytes), connecting to addr, and returns Gbit/s.
func httpsDownload(ns *Netns, addr, u string, n int64) (float64, error) {
	hc := ns.HTTPClient("")
	tr := hc.Transport.(*http.Transport)
	tr.TLSClientConfig = &tls.Config{RootCAs: TestCA().Pool()}
	tr.DialContext = func(ctx context.Context, network, _ string) (net.Conn, error) {
		return ns.DialContext(ctx, network, addr)
	}
	start := time.Now()
	resp, err := hc.Get(u)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	got, err := io.Copy(io.Discard, resp.Body)
	if err != nil || got != n {
		return 0, fmt.Errorf("got %d of %d bytes: %v", got, n, err)
	}
	return gbit(n, time.Since(start)), nil
}

// connRate opens connections to addr from 4 workers for d, each sending
// one byte and reading the answer (a client-first exchange, as TLS and
// HTTP are), and returns connections per second.
func connRate(ctx context.Context, ns *Netns, addr string, d time.Duration) (float64, error) {
	var done atomic.Int64
	var firstErr atomic.Value
	end := time.Now().Add(d)
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b := make([]byte, 1)
			for time.Now().Before(end) {
				c, err := ns.DialContext(ctx, "tcp", addr)
				if err == nil {
					if _, err = c.Write(b); err == nil {
						_, err = io.ReadFull(c, b)
					}
					c.Close()
				}
				if err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		return 0, err
	}
	return float64(done.Load()) / d.Seconds(), nil
}

// udpRate sends 1200-byte datagrams (a QUIC packet's size) to addr for d
// and returns the Gbit/s the sink received. The sender runs on a thread
// of its own pinned to the first CPU, and the sink on the second
// (startBenchServers): forwarding a datagram is done in the sender's
// context, and left to the scheduler the two ends sometimes shared a
// core and sometimes not, which doubled or halved single rounds.
func udpRate(ctx context.Context, topo *Topology, addr string, d time.Duration) (float64, error) {
	c, err := topo.Phone.DialContext(ctx, "udp", addr)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	before := udpReceived.Load()
	start := time.Now()
	done := make(chan struct{})
	go func() {
		defer close(done)
		pinThread(0) // the thread ends with the goroutine, pinned
		buf := make([]byte, 1200)
		for time.Since(start) < d {
			c.Write(buf) // a full queue drops: the sink's count is what got through
		}
	}()
	<-done
	time.Sleep(100 * time.Millisecond) // the last datagrams in flight
	return gbit(udpReceived.Load()-before, time.Since(start)), nil
}

// pinThread locks the calling goroutine to its thread and the thread to
// CPU cpu (modulo the CPUs there are); the goroutine must not unlock:
// the thread then ends with it instead of going back pinned.
func pinThread(cpu int) {
	runtime.LockOSThread()
	var set unix.CPUSet
	set.Set(cpu % runtime.NumCPU())
	unix.SchedSetaffinity(0, &set)
}

func gbit(n int64, d time.Duration) float64 { return float64(n) * 8 / d.Seconds() / 1e9 }
