package proxy_test

import (
	"bytes"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chaos-unicorn/unicorn/proxy"
	"github.com/chaos-unicorn/unicorn/rules"
	xproxy "golang.org/x/net/proxy"
)

// socksWorld is a world whose proxy also serves SOCKS5 on 127.0.0.1:0.
type socksWorld struct {
	*world
	SOCKS     *proxy.SOCKS
	SOCKSAddr string
}

// newSOCKSWorld starts a world (see newWorld) with a SOCKS5 listener
// configured by sc; both stop when t ends.
func newSOCKSWorld(t *testing.T, wc worldConfig, sc proxy.SOCKSConfig) *socksWorld {
	t.Helper()
	served := make(chan error, 1)
	started := false
	// Registered before newWorld's cleanup, so it runs after the proxy's
	// Close, which ends Serve.
	t.Cleanup(func() {
		if started {
			if err := <-served; err != nil {
				t.Errorf("SOCKS Serve: %v", err)
			}
		}
	})
	w := newWorld(t, wc)
	s := w.Proxy.SOCKS(sc)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	started = true
	go func() { served <- s.Serve(l) }()
	return &socksWorld{world: w, SOCKS: s, SOCKSAddr: l.Addr().String()}
}

// socksClient returns an http.Client that connects through the SOCKS5
// listener with golang.org/x/net/proxy, trusts roots with TLS server name
// serverName, and gives up after timeout.
func (w *socksWorld) socksClient(timeout time.Duration, roots *x509.CertPool, serverName string) *http.Client {
	d, err := xproxy.SOCKS5("tcp", w.SOCKSAddr, nil, &net.Dialer{})
	if err != nil {
		w.t.Fatal(err)
	}
	cl := w.client(timeout, roots, serverName)
	tr := cl.Transport.(*http.Transport)
	tr.Proxy = nil
	tr.DialContext = d.(xproxy.ContextDialer).DialContext
	return cl
}

func TestSOCKSConnectAllowed(t *testing.T) {
	up := newUpstream(t, true)
	w := newSOCKSWorld(t, worldConfig{Hosts: testHosts}, proxy.SOCKSConfig{})
	for _, c := range []struct{ host, serverName string }{
		{"127.0.0.1", ""},
		{"api.example.test", "example.com"}, // sent as ATYP 3, resolved by unicorn
	} {
		t.Run(c.host, func(t *testing.T) {
			resp, err := w.socksClient(10*time.Second, up.Roots(), c.serverName).Get(up.URLFor(c.host))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != 200 || string(b) != Body {
				t.Fatalf("got %d %q", resp.StatusCode, b)
			}
		})
	}
	// The name went to the rules as a name, then by the address it resolved to.
	var sawName bool
	for _, f := range w.Rules.Flows() {
		if f.Host == "api.example.test" && f.Layer == rules.LayerTCP && f.Addr == loopback {
			sawName = true
		}
	}
	if !sawName {
		t.Errorf("flows %v: no TCP question for the name and its address", w.Rules.Flows())
	}
}

func TestSOCKSRejected(t *testing.T) {
	up := newUpstream(t, true)
	w := newSOCKSWorld(t, worldConfig{Hosts: testHosts, Decide: func(f rules.Flow) rules.Decision {
		if f.Host == "api.example.test" {
			return decision(rules.ActionReject, rules.Params{})
		}
		return rules.Decision{}
	}}, proxy.SOCKSConfig{})
	start := time.Now()
	_, err := w.socksClient(10*time.Second, up.Roots(), "example.com").Get(up.URLFor("api.example.test"))
	if err == nil || !strings.Contains(err.Error(), "connection not allowed by ruleset") {
		t.Fatalf("err = %v, want connection not allowed by ruleset", err)
	}
	within(t, "refusal", time.Since(start), 0, 500*time.Millisecond)
	if up.Hits() != 0 {
		t.Errorf("upstream got %d requests", up.Hits())
	}
	logs := w.Logs.Find("proxy decision")
	if len(logs) != 1 || logs[0].attrs["action"] != "reject" || logs[0].attrs["target"] != "api.example.test:"+itoa(up.Port) {
		t.Errorf("decision logs %v", logs)
	}
}

func TestSOCKSSinkholeAndResolveFailure(t *testing.T) {
	w := newSOCKSWorld(t, worldConfig{Hosts: testHosts, Decide: func(f rules.Flow) rules.Decision {
		if f.Host == "api.example.test" {
			return decision(rules.ActionSinkhole, rules.Params{})
		}
		return rules.Decision{}
	}}, proxy.SOCKSConfig{})
	for host, want := range map[string]string{"api.example.test": "host unreachable", "nosuch.example.test": "host unreachable"} {
		_, err := w.socksClient(5*time.Second, nil, "").Get("http://" + host + ":9/")
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err = %v, want %s", host, err, want)
		}
	}
}

func TestSOCKSBlackhole(t *testing.T) {
	up := newUpstream(t, true)
	hole := func(rules.Flow) rules.Decision { return decision(rules.ActionBlackhole, rules.Params{}) }
	for _, c := range []struct {
		name          string
		hold, timeout time.Duration
		lo, hi        time.Duration
	}{
		{"client-gives-up", 30 * time.Second, 300 * time.Millisecond, 280 * time.Millisecond, 1500 * time.Millisecond},
		{"proxy-gives-up", 300 * time.Millisecond, 5 * time.Second, 280 * time.Millisecond, 2 * time.Second},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := newSOCKSWorld(t, worldConfig{Decide: hole, Blackhole: c.hold}, proxy.SOCKSConfig{})
			start := time.Now()
			resp, err := w.socksClient(c.timeout, up.Roots(), "").Get(up.URLFor("127.0.0.1"))
			if err == nil {
				resp.Body.Close()
				t.Fatalf("blackholed request answered %d", resp.StatusCode)
			}
			within(t, "blackhole", time.Since(start), c.lo, c.hi)
			if c.name == "proxy-gives-up" {
				// (Go's transport finishes a dial it gave up on in the
				// background; see client-closes.)
				eventually(t, 2*time.Second, "proxy still holds the client", func() bool { return w.Proxy.Held() == 0 })
			}
		})
	}
	t.Run("client-closes", func(t *testing.T) {
		w := newSOCKSWorld(t, worldConfig{Decide: hole, Blackhole: 30 * time.Second}, proxy.SOCKSConfig{})
		c := socksDial(t, w.SOCKSAddr)
		c.Write(append([]byte{5, 1, 0}, socksRequest(1, "127.0.0.1", 9)...))
		eventually(t, 2*time.Second, "proxy does not hold the client", func() bool { return w.Proxy.Held() == 1 })
		c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		got, err := io.ReadAll(c)
		if !bytes.Equal(got, []byte{5, 0}) || !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("blackholed request got % x %v, want the method choice and silence", got, err)
		}
		c.Close()
		eventually(t, 2*time.Second, "proxy still holds the client", func() bool { return w.Proxy.Held() == 0 })
	})
	if up.Hits() != 0 {
		t.Errorf("upstream got %d requests", up.Hits())
	}
}

func TestSOCKSSpoof(t *testing.T) {
	up := newUpstream(t, false)
	// The name is unknown to DNS: spoof decides where it goes, on the port asked.
	w := newSOCKSWorld(t, worldConfig{Decide: func(f rules.Flow) rules.Decision {
		if f.Host == "spoofed.example.test" {
			return decision(rules.ActionSpoof, rules.Params{Addrs: []netip.Addr{loopback}})
		}
		return rules.Decision{}
	}}, proxy.SOCKSConfig{})
	resp, err := w.socksClient(5*time.Second, nil, "").Get(up.URLFor("spoofed.example.test"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != Body || up.Hits() != 1 {
		t.Fatalf("got %d %q, upstream hits %d", resp.StatusCode, b, up.Hits())
	}
	if h := up.Hosts(); len(h) != 1 || !strings.HasPrefix(h[0], "spoofed.example.test:") {
		t.Errorf("upstream saw Host %v", h)
	}
}

func TestSOCKSAddressDecidedByRememberedName(t *testing.T) {
	up := newUpstream(t, false)
	// The device resolved blocked.example.test through unicorn's DNS to
	// 127.0.0.1 and now asks for the address: the name rule applies.
	names := func(a netip.Addr) (string, bool) {
		if a == loopback {
			return "blocked.example.test", true
		}
		return "", false
	}
	w := newSOCKSWorld(t, worldConfig{Decide: func(f rules.Flow) rules.Decision {
		if f.Host == "blocked.example.test" {
			return decision(rules.ActionReject, rules.Params{})
		}
		return rules.Decision{}
	}}, proxy.SOCKSConfig{Names: names})
	_, err := w.socksClient(5*time.Second, nil, "").Get(up.URLFor("127.0.0.1"))
	if err == nil || !strings.Contains(err.Error(), "connection not allowed by ruleset") {
		t.Fatalf("err = %v, want connection not allowed by ruleset", err)
	}
	flows := w.Rules.Flows()
	if len(flows) != 2 || flows[0].Host != "" || flows[0].Addr != loopback ||
		flows[1].Layer != rules.LayerTCP || flows[1].Host != "blocked.example.test" || flows[1].Addr != loopback {
		t.Errorf("flows %v, want the address, then the address with its name at tcp", flows)
	}
	if up.Hits() != 0 {
		t.Errorf("upstream got %d requests", up.Hits())
	}
}

func TestSOCKSClientNotAllowed(t *testing.T) {
	up := newUpstream(t, false)
	w := newSOCKSWorld(t, worldConfig{Clients: rules.NewClientSet(netip.MustParsePrefix("192.0.2.0/24"))}, proxy.SOCKSConfig{})
	for range 2 {
		_, err := w.socksClient(5*time.Second, nil, "").Get(up.URLFor("127.0.0.1"))
		if err == nil || !strings.Contains(err.Error(), "connection not allowed by ruleset") {
			t.Fatalf("err = %v, want connection not allowed by ruleset", err)
		}
	}
	if n := len(w.Logs.Find("client not allowed")); n != 1 {
		t.Errorf("%d 'client not allowed' lines, want 1", n)
	}
	if up.Hits() != 0 || len(w.Rules.Flows()) != 0 {
		t.Errorf("a client not allowed reached the rules or the upstream")
	}
}

// socksDial opens a connection to the SOCKS listener, with a 5 s deadline;
// it is closed when t ends.
func socksDial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(5 * time.Second))
	return c
}

// socksRequest builds a request for cmd to host:port (a name or address).
func socksRequest(cmd byte, host string, port uint16) []byte {
	b := []byte{5, cmd, 0}
	if a, err := netip.ParseAddr(host); err == nil && a.Is4() {
		s := a.As4()
		b = append(append(b, 1), s[:]...)
	} else if err == nil {
		s := a.As16()
		b = append(append(b, 4), s[:]...)
	} else {
		b = append(append(b, 3, byte(len(host))), host...)
	}
	return binary.BigEndian.AppendUint16(b, port)
}

func TestSOCKSMalformed(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Run("requests", func(t *testing.T) {
		w := newSOCKSWorld(t, worldConfig{}, proxy.SOCKSConfig{})
		noAuth := []byte{5, 1, 0}
		long := append([]byte{5, 1, 0, 3, 255}, bytes.Repeat([]byte("a"), 10)...)
		for _, c := range []struct {
			name string
			send []byte
			want []byte // what the client reads before the close
		}{
			{"empty", nil, nil},
			{"socks4", []byte{4, 1, 0, 80, 127, 0, 0, 1, 0}, nil},
			{"http", []byte("GET / HTTP/1.1\r\n\r\n"), nil},
			{"no methods", []byte{5, 0}, nil},
			{"only username/password", []byte{5, 1, 2}, []byte{5, 0xff}},
			{"truncated greeting", []byte{5, 3, 0}, nil},
			{"truncated request", append(noAuth, 5, 1, 0), []byte{5, 0}},
			{"bad request version", append(noAuth, socksRequest(1, "127.0.0.1", 80)[1:]...), []byte{5, 0}},
			{"bad address type", append(noAuth, 5, 1, 0, 9, 1, 2, 3, 4, 0, 80), []byte{5, 0, 5, 8, 0, 1, 0, 0, 0, 0, 0, 0}},
			{"bind", append(noAuth, socksRequest(2, "127.0.0.1", 80)...), []byte{5, 0, 5, 7, 0, 1, 0, 0, 0, 0, 0, 0}},
			{"unknown command", append(noAuth, socksRequest(9, "127.0.0.1", 80)...), []byte{5, 0, 5, 7, 0, 1, 0, 0, 0, 0, 0, 0}},
			{"name longer than sent", append(noAuth, long...), []byte{5, 0}},
			{"empty name", append(noAuth, 5, 1, 0, 3, 0, 0, 80), []byte{5, 0, 5, 4, 0, 1, 0, 0, 0, 0, 0, 0}},
			{"NUL in name", append(noAuth, socksRequest(1, "a\x00b.test", 80)...), []byte{5, 0, 5, 4, 0, 1, 0, 0, 0, 0, 0, 0}},
			{"port 0", append(noAuth, socksRequest(1, "127.0.0.1", 0)...), []byte{5, 0, 5, 4, 0, 1, 0, 0, 0, 0, 0, 0}},
		} {
			t.Run(c.name, func(t *testing.T) {
				conn := socksDial(t, w.SOCKSAddr)
				conn.Write(c.send)
				conn.(*net.TCPConn).CloseWrite()
				got, err := io.ReadAll(conn)
				if err != nil && !errors.Is(err, net.ErrClosed) && !isReset(err) {
					t.Fatalf("read: %v (got %v)", err, got)
				}
				if !bytes.Equal(got, c.want) {
					t.Errorf("got % x, want % x", got, c.want)
				}
			})
		}
		if n := len(w.Rules.Flows()); n != 0 {
			t.Errorf("malformed requests reached the rules %d times", n)
		}
	})
	waitGoroutines(t, before)
}

// TestSOCKSCloseEndsEverything: the Proxy's Close ends a silent client,
// a blackholed one, a tunnel and a UDP association, and leaves no
// goroutine behind.
func TestSOCKSCloseEndsEverything(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Run("close", func(t *testing.T) {
		target, stopCounter := newCounter(t)
		w := newSOCKSWorld(t, worldConfig{Decide: func(f rules.Flow) rules.Decision {
			if f.Port == 9 {
				return decision(rules.ActionBlackhole, rules.Params{})
			}
			return rules.Decision{}
		}}, proxy.SOCKSConfig{})
		idle := socksDial(t, w.SOCKSAddr)
		hole := socksDial(t, w.SOCKSAddr)
		hole.Write(append([]byte{5, 1, 0}, socksRequest(1, "127.0.0.1", 9)...))
		tunnel := socksDial(t, w.SOCKSAddr)
		tap := netip.MustParseAddrPort(target)
		tunnel.Write(append([]byte{5, 1, 0}, socksRequest(1, tap.Addr().String(), tap.Port())...))
		head := make([]byte, 12)
		if _, err := io.ReadFull(tunnel, head); err != nil || head[3] != 0 {
			t.Fatalf("tunnel reply % x %v", head, err)
		}
		assoc := socksDial(t, w.SOCKSAddr)
		assoc.Write(append([]byte{5, 1, 0}, socksRequest(3, "0.0.0.0", 0)...))
		if _, err := io.ReadFull(assoc, head); err != nil || head[3] != 0 {
			t.Fatalf("associate reply % x %v", head, err)
		}
		eventually(t, 2*time.Second, "blackholed client not held", func() bool { return w.Proxy.Held() == 1 })
		if err := w.Proxy.Close(); err != nil {
			t.Fatal(err)
		}
		for _, c := range []net.Conn{idle, hole, tunnel, assoc} {
			c.SetReadDeadline(time.Now().Add(2 * time.Second))
			if _, err := io.ReadAll(c); err != nil && !isReset(err) {
				t.Errorf("connection not closed by Close: %v", err)
			}
			c.Close()
		}
		stopCounter()
	})
	waitGoroutines(t, before)
}

// waitGoroutines fails t unless the goroutine count is back to before
// within 5 s.
func waitGoroutines(t *testing.T, before int) {
	t.Helper()
	var now int
	deadline := time.Now().Add(5 * time.Second)
	for now = runtime.NumGoroutine(); now > before && time.Now().Before(deadline); now = runtime.NumGoroutine() {
		time.Sleep(20 * time.Millisecond)
	}
	if now > before {
		buf := make([]byte, 1<<20)
		t.Fatalf("%d goroutines before, %d after:\n%s", before, now, buf[:runtime.Stack(buf, true)])
	}
}

// isReset reports whether err is a connection reset by the peer.
func isReset(err error) bool {
	return err != nil && strings.Contains(err.Error(), "connection reset")
}

func itoa(n uint16) string { return strconv.Itoa(int(n)) }

func TestSOCKSOnDevicePage(t *testing.T) {
	w := newWorld(t, worldConfig{Info: func(netip.Addr) proxy.PageInfo {
		return proxy.PageInfo{SOCKSAddrs: []string{"192.0.2.7:1080"}}
	}})
	resp, body := w.get(w.URL.String() + "/")
	if resp.StatusCode != 200 || !strings.Contains(body, "SOCKS5") || !strings.Contains(body, "<code>192.0.2.7:1080</code>") {
		t.Errorf("page (%d) does not show the SOCKS address:\n%s", resp.StatusCode, body)
	}
	w = newWorld(t, worldConfig{})
	if _, body := w.get(w.URL.String() + "/"); strings.Contains(body, "SOCKS5") {
		t.Errorf("page mentions SOCKS5 when it is off")
	}
}

func TestSOCKSDelay(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 4)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()
	ap := netip.MustParseAddrPort(l.Addr().String())
	w := newSOCKSWorld(t, worldConfig{Decide: func(rules.Flow) rules.Decision {
		return decision(rules.ActionDelay, rules.Params{Latency: 400 * time.Millisecond})
	}}, proxy.SOCKSConfig{})

	t.Run("answered-late", func(t *testing.T) {
		c := socksDial(t, w.SOCKSAddr)
		start := time.Now()
		// Optimistic data right behind the request reaches the upstream.
		c.Write(append(append([]byte{5, 1, 0}, socksRequest(1, ap.Addr().String(), ap.Port())...), "early"...))
		head := make([]byte, 12)
		if _, err := io.ReadFull(c, head); err != nil || head[3] != 0 {
			t.Fatalf("reply % x %v", head, err)
		}
		within(t, "delayed CONNECT", time.Since(start), 380*time.Millisecond, 2*time.Second)
		up := <-accepted
		defer up.Close()
		up.SetReadDeadline(time.Now().Add(2 * time.Second))
		got := make([]byte, 5)
		if _, err := io.ReadFull(up, got); err != nil || string(got) != "early" {
			t.Errorf("upstream got %q %v, want the early bytes", got, err)
		}
	})
	t.Run("client-gives-up", func(t *testing.T) {
		c := socksDial(t, w.SOCKSAddr)
		c.Write(append([]byte{5, 1, 0}, socksRequest(1, ap.Addr().String(), ap.Port())...))
		time.Sleep(100 * time.Millisecond)
		c.Close()
		select {
		case up := <-accepted:
			up.Close()
			t.Errorf("the proxy dialled the upstream for a client that had gone")
		case <-time.After(800 * time.Millisecond):
		}
	})
}
