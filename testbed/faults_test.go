package testbed_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chaos-unicorn/unicorn/testbed"
	"github.com/miekg/dns"
)

// faultsFile is the scenario TestFaults starts unicorn with.
const faultsFile = `scenario: faults-e2e
rules:
  - {hosts: [slow.test], action: throttle, rate: 128KiB/s, direction: down}
  - {hosts: [censored.test], action: tls_reset}
  - {hosts: [alerted.test], action: tls_reset, mode: alert}
  - {hosts: [tc.test], action: truncate}
`

// sizedSite answers GET /N with N zero bytes.
func sizedSite() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Path[1:])
		w.Header().Set("Content-Length", strconv.Itoa(n))
		w.Write(make([]byte, n))
	})
}

// TestFaults starts the binary with byte-fault and censor rules and checks
// what real clients see through its proxy and DNS server.
func TestFaults(t *testing.T) {
	t.Parallel()
	w := testbed.NewWorld(t)
	site, _ := testbed.ServeHTTPS(t, "127.0.0.1", sizedSite())
	lo := netip.MustParseAddr("127.0.0.1")
	for _, n := range []string{"slow.test", "censored.test", "alerted.test", "tc.test", "fine.test"} {
		w.DNS.Map(n, lo)
	}
	u := w.Start(t, "--rules", writeFile(t, "faults.yaml", faultsFile))
	c := newProxyClient(u)
	url := func(host string, n int) string { return fmt.Sprintf("https://%s:%s/%d", host, port(t, site), n) }

	t.Run("throttle", func(t *testing.T) {
		t.Parallel()
		const size, rate = 256 << 10, 128 << 10
		for _, host := range []string{"fine.test", "slow.test"} {
			start := time.Now()
			resp, err := c.Get(url(host, size))
			if err != nil {
				t.Fatal(err)
			}
			n, err := io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			took := time.Since(start)
			if err != nil || n != size {
				t.Fatalf("%s: %d bytes, %v", host, n, err)
			}
			want := time.Duration(size) * time.Second / rate
			if host == "fine.test" {
				if took > want/2 {
					t.Errorf("fine.test (no rule) took %v", took)
				}
				continue
			}
			t.Logf("256 KiB at 128 KiB/s through the binary: %v", took)
			if took < want*9/10 || took > want*11/10 {
				t.Errorf("slow.test took %v, want %v ±10%%", took, want)
			}
		}
	})
	t.Run("tls_reset", func(t *testing.T) {
		t.Parallel()
		_, err := c.Get(url("censored.test", 10))
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("err = %v, want connection reset in the handshake", err)
		}
		u.WaitLog(t, map[string]string{"msg": "proxy decision", "layer": "tls", "target": "censored.test:" + port(t, site), "action": "tls_reset"})
		_, err = c.Get(url("alerted.test", 10))
		if err == nil || !containsAll(err.Error(), "remote error: tls: handshake failure") {
			t.Fatalf("err = %v, want a handshake_failure alert", err)
		}
		// A CONNECT to the bare address is reset too: the censor goes
		// by the name in the ClientHello.
		byAddr := newProxyClient(u)
		tc := testbed.TestCA().ClientConfig()
		tc.ServerName = "censored.test"
		byAddr.Transport.(*http.Transport).TLSClientConfig = tc
		_, err = byAddr.Get(url("127.0.0.1", 10))
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("CONNECT 127.0.0.1 with SNI censored.test: err = %v, want connection reset", err)
		}
	})
	t.Run("truncate", func(t *testing.T) {
		t.Parallel()
		r, err := exchange(u.DNS, "udp", "tc.test", dns.TypeA, 3*time.Second)
		if err != nil || !r.Truncated || len(r.Answer) != 0 {
			t.Fatalf("udp: %v %v, want TC and no answer", r, err)
		}
		r, err = exchange(u.DNS, "tcp", "tc.test", dns.TypeA, 3*time.Second)
		if err != nil || r.Truncated || len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "127.0.0.1" {
			t.Fatalf("tcp: %v %v, want the real answer", r, err)
		}
	})
}

func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

// TestReloadCutsOpenTunnel: a reload whose new rule rejects the target of
// an open CONNECT tunnel closes it within a second (on_existing: cut, the
// default for reject); a rule with on_existing: keep would leave it.
func TestReloadCutsOpenTunnel(t *testing.T) {
	t.Parallel()
	w := testbed.NewWorld(t)
	echo := echoServer(t)
	file := writeFile(t, "live.yaml", "scenario: live\nrules:\n  - {hosts: [other.test], action: reject}\n")
	u := w.Start(t, "--rules", file)

	conn, err := net.Dial("tcp", u.Proxy)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(conn, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", echo, echo)
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("CONNECT: %v %v", resp, err)
	}
	fmt.Fprintf(conn, "ping\n")
	if line, err := br.ReadString('\n'); err != nil || line != "ping\n" {
		t.Fatalf("echo: %q %v", line, err)
	}

	if err := os.WriteFile(file, []byte("scenario: live\nrules:\n  - {ips: [127.0.0.1], ports: ["+port(t, echo)+"], action: reject}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := syscall.Kill(u.Pid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if _, err := br.ReadByte(); err == nil {
		t.Fatal("the tunnel still carries bytes after the reload")
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("tunnel closed %v after the reload, want within 1s", took)
	}
	u.WaitLog(t, map[string]string{"msg": "live tunnel: cut by a rule change", "action": "reject"})
}

// echoServer is a TCP echo server on loopback.
func echoServer(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(30 * time.Second))
				io.Copy(c, c)
			}()
		}
	}()
	return l.Addr().String()
}

// TestPresetSwitchCutsOpenTunnel: switching the built-in preset
// "censor: SNI reset" on through the control API takes down an HTTPS
// connection to Infura that is already open (tls_reset cuts open
// connections by default) within a second, and new connections are reset
// in their handshake.
func TestPresetSwitchCutsOpenTunnel(t *testing.T) {
	t.Parallel()
	w := testbed.NewWorld(t)
	u := w.Start(t, "--scenario", "cud-2019-third-parties") // nothing for Infura at start
	api := newControlAPI(t, u)
	tr := &http.Transport{
		Proxy:           http.ProxyURL(u.ProxyURL),
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
	// The tunnel is open and idle in the transport's pool; watch it from
	// the unicorn side: the log says when it is cut.
	start := time.Now()
	api.mustCall("POST", "/api/scenarios/preset-censor-sni-reset/on", "", nil)
	u.WaitLog(t, map[string]string{"msg": "live tunnel: cut by a rule change", "action": "tls_reset", "scenario": "preset-censor-sni-reset"})
	if took := time.Since(start); took > time.Second {
		t.Errorf("open tunnel cut %v after the switch, want within 1s", took)
	}
	if err := call(); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("after the switch: %v, want connection reset in the handshake", err)
	}
}
