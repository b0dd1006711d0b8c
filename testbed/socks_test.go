package testbed_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chaos-unicorn/unicorn/control"
	"github.com/chaos-unicorn/unicorn/testbed"
	"github.com/miekg/dns"
	xproxy "golang.org/x/net/proxy"
)

// socksWorld is the binary with --socks on 127.0.0.1:0 and rules of its
// own, in a World whose resolver also knows the names the rules are about.
type socksWorld struct {
	w     *testbed.World
	u     *testbed.Unicorn
	socks string // the SOCKS listener, "127.0.0.1:port"
	// udpBlocked is a UDP server on 127.0.0.1 the rules block datagrams to.
	udpBlocked *net.UDPConn
}

func newSOCKSWorld(t *testing.T) *socksWorld {
	t.Helper()
	sw := &socksWorld{w: testbed.NewWorld(t)}
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	sw.udpBlocked = pc
	for _, n := range []string{"blocked.test", "remembered.test", "slow.test"} {
		sw.w.DNS.Map(n, netip.MustParseAddr("127.0.0.1"))
	}
	rulesFile := writeFile(t, "socks.yaml", `scenario: socks-test
rules:
  - {domains: [blocked.test], action: reject}
  - {hosts: [remembered.test], action: delay, latency: 400ms}
  - {hosts: [slow.test], action: throttle, rate: 128KiB/s, direction: down}
  - {ips: [127.0.0.1], ports: [`+port(t, pc.LocalAddr().String())+`/udp], action: reject}
`)
	sw.u = sw.w.Start(t, "--rules", rulesFile, "--socks", "127.0.0.1:0")
	sw.socks = sw.u.WaitLog(t, map[string]string{"msg": "serving"}).Str("socks")
	if sw.socks == "" {
		t.Fatalf("no SOCKS address in the serving log line; stderr:\n%s", sw.u.Stderr())
	}
	return sw
}

// curl runs curl with args and returns its exit code, stdout and stderr.
func curl(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	return curlIn(t, nil, args...)
}

// curlIn is curl run in network namespace n (nil: here).
func curlIn(t *testing.T, n *testbed.Netns, args ...string) (int, string, string) {
	t.Helper()
	if _, err := exec.LookPath("curl"); err != nil {
		t.Fatalf("curl is not installed (.ci/run installs it): %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out, errb bytes.Buffer
	argv := append([]string{"curl", "-sS", "--max-time", "10", "--noproxy", ""}, args...)
	if n != nil {
		argv = n.Exec(argv...)
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), "ALL_PROXY=", "HTTPS_PROXY=", "HTTP_PROXY=", "http_proxy=", "https_proxy=")
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, out.String(), errb.String()
	case errors.As(err, &ee):
		return ee.ExitCode(), out.String(), errb.String()
	}
	t.Fatalf("curl %v: %v", args, err)
	return 0, "", ""
}

func TestSOCKSCurl(t *testing.T) {
	t.Parallel()
	sw := newSOCKSWorld(t)
	sitePort := port(t, sw.w.Site)
	tlsPort := port(t, sw.w.SiteTLS)
	ca := writeFile(t, "ca.pem", string(testbed.TestCA().PEM()))

	t.Run("socks5-hostname", func(t *testing.T) {
		// unicorn resolves the name (the World's resolver maps it to 127.0.0.1).
		code, body, stderr := curl(t, "--socks5-hostname", sw.socks, "--cacert", ca, "https://example.org:"+tlsPort+"/")
		if code != 0 || body != testbed.SiteBody {
			t.Errorf("exit %d, body %q, stderr %s", code, body, stderr)
		}
	})
	t.Run("socks5", func(t *testing.T) {
		// curl resolves the name itself and sends the address.
		code, body, stderr := curl(t, "--socks5", sw.socks, "--resolve", "example.org:"+sitePort+":127.0.0.1", "http://example.org:"+sitePort+"/")
		if code != 0 || body != testbed.SiteBody {
			t.Errorf("exit %d, body %q, stderr %s", code, body, stderr)
		}
	})
	t.Run("rejected", func(t *testing.T) {
		start := time.Now()
		code, _, stderr := curl(t, "--socks5-hostname", sw.socks, "http://blocked.test:"+sitePort+"/")
		// curl: (97) Can't complete SOCKS5 connection to blocked.test. (2)
		if code != 97 || !strings.Contains(stderr, "(2)") {
			t.Errorf("exit %d, stderr %q; want 97 and reply 2 (not allowed by ruleset)", code, stderr)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("refusal took %v", d)
		}
		sw.u.WaitLog(t, map[string]string{"msg": "proxy decision", "action": "reject", "target": "blocked.test:" + sitePort, "via": "socks"})
		// The event a tester sees says what curl got: a SOCKS refusal, not
		// the HTTP proxy's 403 page.
		var got []string
		for deadline := time.Now().Add(5 * time.Second); len(got) == 0 && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			var recent struct{ Events []control.Event }
			if err := json.Unmarshal([]byte(httpGet(t, "http://"+sw.u.Control+"/api/events/recent?service=socks-test")), &recent); err != nil {
				t.Fatal(err)
			}
			for _, ev := range recent.Events {
				if ev.Target == "blocked.test:"+sitePort {
					got = append(got, ev.Layer+": "+ev.Outcome)
				}
			}
		}
		if !slices.Equal(got, []string{"socks: SOCKS refused (not allowed by ruleset)"}) {
			t.Errorf("events for the refusal: %q", got)
		}
	})
	t.Run("throttle", func(t *testing.T) {
		const size, rate = 256 << 10, 128 << 10
		want := time.Duration(size) * time.Second / rate
		site, _ := testbed.ServeHTTPS(t, "127.0.0.1", sizedSite())
		start := time.Now()
		code, _, stderr := curl(t, "--socks5-hostname", sw.socks, "--cacert", ca, "-o", os.DevNull,
			"https://slow.test:"+port(t, site)+"/"+strconv.Itoa(size))
		took := time.Since(start)
		if code != 0 {
			t.Fatalf("exit %d, stderr %s", code, stderr)
		}
		t.Logf("256 KiB at 128 KiB/s through SOCKS: %v", took)
		if took < want*9/10 || took > want*11/10+300*time.Millisecond { // + curl's start and handshake
			t.Errorf("slow.test took %v, want %v ±10%%", took, want)
		}
	})
	t.Run("address-attributed-to-name", func(t *testing.T) {
		// The device asked unicorn's DNS for remembered.test, then connects
		// by address: the rule for the name applies to the address.
		if r := ask(t, sw.u.DNS, "udp", "remembered.test", dns.TypeA); len(answerAddrs(r)) != 1 {
			t.Fatalf("DNS answer %v", r)
		}
		start := time.Now()
		code, body, stderr := curl(t, "--socks5", sw.socks, "http://127.0.0.1:"+sitePort+"/")
		if code != 0 || body != testbed.SiteBody {
			t.Errorf("exit %d, body %q, stderr %s", code, body, stderr)
		}
		if d := time.Since(start); d < 380*time.Millisecond || d > 5*time.Second {
			t.Errorf("connection took %v, want the rule's 400ms delay", d)
		}
		sw.u.WaitLog(t, map[string]string{"msg": "proxy decision", "action": "delay", "layer": "tcp",
			"target": "remembered.test:" + sitePort, "addr": "127.0.0.1"})
	})
}

func TestSOCKSUDPDNS(t *testing.T) {
	t.Parallel()
	sw := newSOCKSWorld(t)
	c, err := net.Dial("tcp", sw.socks)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	// Greeting, then UDP ASSOCIATE from any address of the client.
	c.Write([]byte{5, 1, 0, 5, 3, 0, 1, 0, 0, 0, 0, 0, 0})
	reply := make([]byte, 2+10)
	if _, err := io.ReadFull(c, reply); err != nil || !bytes.Equal(reply[:6], []byte{5, 0, 5, 0, 0, 1}) {
		t.Fatalf("associate: % x %v", reply, err)
	}
	relay := netip.AddrPortFrom(netip.AddrFrom4([4]byte(reply[6:10])), binary.BigEndian.Uint16(reply[10:]))
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()

	// send wraps payload in the SOCKS UDP header for dst.
	send := func(dst netip.AddrPort, payload []byte) {
		a := dst.Addr().As4()
		b := append([]byte{0, 0, 0, 1}, a[:]...)
		b = binary.BigEndian.AppendUint16(b, dst.Port())
		if _, err := pc.WriteToUDPAddrPort(append(b, payload...), relay); err != nil {
			t.Fatal(err)
		}
	}
	recv := func(wait time.Duration) []byte {
		pc.SetReadDeadline(time.Now().Add(wait))
		buf := make([]byte, 4096)
		n, _, err := pc.ReadFromUDPAddrPort(buf)
		if err != nil {
			return nil
		}
		return buf[:n]
	}

	// A DNS question to the World's resolver, through the relay.
	resolver := netip.MustParseAddrPort(sw.w.DNSAddr)
	q := new(dns.Msg)
	q.SetQuestion("example.org.", dns.TypeA)
	wire, _ := q.Pack()
	send(resolver, wire)
	got := recv(5 * time.Second)
	if len(got) < 10 || !bytes.Equal(got[:4], []byte{0, 0, 0, 1}) || netip.AddrFrom4([4]byte(got[4:8])) != resolver.Addr() ||
		binary.BigEndian.Uint16(got[8:10]) != resolver.Port() {
		t.Fatalf("reply header % x, want one naming %v", got[:min(len(got), 10)], resolver)
	}
	var m dns.Msg
	if err := m.Unpack(got[10:]); err != nil || m.Id != q.Id || len(answerAddrs(&m)) != 1 || answerAddrs(&m)[0] != "127.0.0.1" {
		t.Fatalf("DNS answer through the relay: %v %v", &m, err)
	}

	// A blocked destination gets nothing, and the block is logged once.
	blocked := sw.udpBlocked.LocalAddr().(*net.UDPAddr).AddrPort()
	for range 3 {
		send(blocked, []byte("nope"))
	}
	if got := recv(300 * time.Millisecond); got != nil {
		t.Errorf("blocked datagram answered: % x", got)
	}
	sw.udpBlocked.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if n, _, err := sw.udpBlocked.ReadFrom(make([]byte, 64)); err == nil {
		t.Errorf("blocked destination got a datagram of %d bytes", n)
	}
	want := map[string]string{"msg": "proxy decision", "layer": "udp", "action": "reject", "target": blocked.String()}
	sw.u.WaitLog(t, want)
	n := 0
	for _, l := range sw.u.Logs() {
		if l.Has(want) {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d log lines for 3 blocked datagrams, want 1", n)
	}
}

// TestSOCKSPresetSwitchCutsOpenTunnel: switching the built-in preset
// "censor: SNI reset" on through the control API takes down an HTTPS
// connection to Infura open through SOCKS within a second, as it does a
// CONNECT tunnel.
func TestSOCKSPresetSwitchCutsOpenTunnel(t *testing.T) {
	t.Parallel()
	w := testbed.NewWorld(t)
	u := w.Start(t, "--scenario", "cud-2019-third-parties", "--socks", "127.0.0.1:0")
	socks := u.WaitLog(t, map[string]string{"msg": "serving"}).Str("socks")
	api := newControlAPI(t, u)
	d, err := xproxy.SOCKS5("tcp", socks, nil, &net.Dialer{})
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{
		DialContext:     d.(xproxy.ContextDialer).DialContext,
		TLSClientConfig: testbed.TestCA().ClientConfig(),
		MaxConnsPerHost: 1, // one tunnel, kept alive
	}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	url := "https://mainnet.infura.io:" + port(t, w.InfuraTLS) + "/v3/key"
	call := func() error {
		resp, err := hc.Post(url, "application/json", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber","params":[]}`))
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if _, err := io.Copy(io.Discard, resp.Body); err != nil {
			return err
		}
		if resp.StatusCode != 200 {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	}
	if err := call(); err != nil {
		t.Fatalf("before the switch: %v", err)
	}
	start := time.Now()
	api.mustCall("POST", "/api/scenarios/preset-censor-sni-reset/on", "", nil)
	u.WaitLog(t, map[string]string{"msg": "live tunnel: cut by a rule change", "action": "tls_reset", "scenario": "preset-censor-sni-reset"})
	if took := time.Since(start); took > time.Second {
		t.Errorf("open SOCKS tunnel cut %v after the switch, want within 1s", took)
	}
	if err := call(); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("after the switch: %v, want connection reset in the handshake", err)
	}
}

// TestSOCKSRemoteClientKeptOffLoopback: a device on the LAN (192.0.2.31,
// in a namespace of the test's own) may use the SOCKS listener, but not
// to reach the unicorn machine's own loopback services: its control API
// on 127.0.0.1 is refused with reply 2.
func TestSOCKSRemoteClientKeptOffLoopback(t *testing.T) {
	if why := testbed.NetnsUnavailable(); why != "" {
		t.Skip(why)
	}
	t.Parallel()
	srv := testbed.NewNetns(t, "sockssrv")
	dev := testbed.NewNetns(t, "socksdev")
	testbed.Veth(t, srv, "192.0.2.30/24", dev, "192.0.2.31/24")
	u := testbed.StartIn(t, srv, "--dns", "192.0.2.30:5353", "--proxy", "192.0.2.30:8080", "--socks", "192.0.2.30:1080",
		"--control", "127.0.0.1:8053", "--allow-clients", "192.0.2.0/24", "--upstream", "192.0.2.99:53",
		"--log-format", "json", "--ca-dir", t.TempDir())
	// Allowed: the device reaches a LAN address (unicorn's own page).
	code, body, stderr := curlIn(t, dev, "--socks5", "192.0.2.30:1080", "http://192.0.2.30:8080/")
	if code != 0 || !strings.Contains(body, "unicorn") {
		t.Fatalf("LAN target: exit %d, stderr %s, body %.200q", code, stderr, body)
	}
	// Refused: the machine's loopback.
	code, _, stderr = curlIn(t, dev, "--socks5", "192.0.2.30:1080", "http://127.0.0.1:8053/api/status")
	if code != 97 || !strings.Contains(stderr, "(2)") {
		t.Errorf("loopback target: exit %d, stderr %q; want 97 and reply 2 (not allowed)", code, stderr)
	}
	u.WaitLog(t, map[string]string{"msg": "proxy error", "via": "socks", "target": "127.0.0.1:8053"})
}
