package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/fstest"
	"time"

	"github.com/chaos-unicorn/unicorn/rules"
)

// clientHello returns the first bytes a Go TLS client sends for name.
func clientHello(t testing.TB, name string) []byte {
	t.Helper()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	go tls.Client(a, &tls.Config{ServerName: name, InsecureSkipVerify: true}).Handshake()
	b.SetReadDeadline(time.Now().Add(5 * time.Second))
	var got []byte
	buf := make([]byte, 4096)
	for {
		n, err := b.Read(buf)
		got = append(got, buf[:n]...)
		if p, done := classify(got); done || err != nil {
			if p.kind != peekTLS {
				t.Fatalf("classify(ClientHello) = %+v", p)
			}
			return got
		}
	}
}

func TestClassify(t *testing.T) {
	hello := clientHello(t, "Mainnet.Infura.IO")
	for _, tc := range []struct {
		name string
		in   []byte
		kind peekKind
		host string
		done bool
	}{
		{"hello", hello, peekTLS, "mainnet.infura.io", true},
		{"hello cut short", hello[:len(hello)-1], peekTLS, "", false},
		{"hello without name", clientHello(t, ""), peekTLS, "", true},
		{"http", []byte("GET / HTTP/1.1\r\nUser-Agent: x\r\nhost: Example.ORG:8080\r\n\r\n"), peekHTTP, "example.org", true},
		{"http v6 host", []byte("GET / HTTP/1.1\r\nHost: [2001:db8::1]:80\r\n\r\n"), peekHTTP, "2001:db8::1", true},
		{"http head cut short", []byte("POST /v3 HTTP/1.1\r\nHost: a"), peekHTTP, "", false},
		{"method cut short", []byte("PO"), peekHTTP, "", false},
		{"ssh", []byte("SSH-2.0-OpenSSH_9.2\r\n"), peekOther, "", true},
		{"garbage record", []byte{0x16, 3, 1, 0, 4, 9, 9, 9, 9}, peekOther, "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, done := classify(tc.in)
			if p.kind != tc.kind || p.host != tc.host || done != tc.done {
				t.Errorf("classify = {%v %q} done %v, want {%v %q} done %v", p.kind, p.host, done, tc.kind, tc.host, tc.done)
			}
		})
	}
}

// FuzzClassify: no input panics, and a name found is lower case without
// a trailing dot.
func FuzzClassify(f *testing.F) {
	f.Add(clientHello(f, "mainnet.infura.io"))
	f.Add([]byte("GET / HTTP/1.1\r\nHost: example.org\r\n\r\n"))
	f.Add([]byte{0x16, 3, 1, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		p, _ := classify(b)
		if p.host != strings.ToLower(p.host) || (p.kind == peekTLS && strings.HasSuffix(p.host, ".")) {
			t.Errorf("host %q", p.host)
		}
	})
}

// transparentWorld is a Proxy serving its transparent listener on
// loopback, with the original destination of every connection faked as
// dst (no firewall needed; the zero dst: the listener itself) and the rules' flows recorded.
type transparentWorld struct {
	addr  string // the transparent listener
	px    *Proxy
	mu    sync.Mutex
	flows []rules.Flow
}

func newTransparentWorld(t *testing.T, dst netip.AddrPort, decide func(rules.Flow) rules.Decision, names map[netip.Addr]string) *transparentWorld {
	t.Helper()
	return newTransparentWorldPeek(t, dst, decide, names, 200*time.Millisecond)
}

func newTransparentWorldPeek(t *testing.T, dst netip.AddrPort, decide func(rules.Flow) rules.Decision, names map[netip.Addr]string, peekFor time.Duration) *transparentWorld {
	t.Helper()
	w := &transparentWorld{}
	px, err := New(Config{
		Decider: rules.DeciderFunc(func(f rules.Flow) rules.Decision {
			w.mu.Lock()
			w.flows = append(w.flows, f)
			w.mu.Unlock()
			return decide(f)
		}),
		OrigDst: func(c net.Conn) (netip.AddrPort, error) {
			if !dst.IsValid() { // as if connected to the listener directly
				return netip.ParseAddrPort(c.LocalAddr().String())
			}
			return dst, nil
		},
		PeekTimeout:      peekFor,
		BlackholeTimeout: 500 * time.Millisecond,
		Names: func(a netip.Addr) (string, bool) {
			n, ok := names[a]
			return n, ok
		},
		EncryptedDNS: func(h string) bool { return h == "dns.google" },
	})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- px.ServeTransparent(l) }()
	t.Cleanup(func() {
		px.Close()
		if err := <-done; err != nil {
			t.Errorf("ServeTransparent: %v", err)
		}
	})
	w.addr, w.px = l.Addr().String(), px
	return w
}

func (w *transparentWorld) lastFlow(t *testing.T) rules.Flow {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.flows) != 1 {
		t.Fatalf("the rules were asked %d times (%v), want once", len(w.flows), w.flows)
	}
	return w.flows[0]
}

// blockName rejects (or blackholes) one name and allows everything else.
func blockName(name string, a rules.Action) func(rules.Flow) rules.Decision {
	r := &rules.Rule{Scenario: "test", Action: a}
	return func(f rules.Flow) rules.Decision {
		if f.Host == name {
			return rules.Decision{Action: a, Rule: r}
		}
		return rules.Decision{}
	}
}

func tlsUpstream(t *testing.T) (*httptest.Server, netip.AddrPort) {
	t.Helper()
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "upstream "+r.Host)
	}))
	t.Cleanup(srv.Close)
	return srv, netip.MustParseAddrPort(srv.Listener.Addr().String())
}

func TestTransparentAllowedTLS(t *testing.T) {
	srv, dst := tlsUpstream(t)
	w := newTransparentWorld(t, dst, blockName("blocked.example", rules.ActionReject), nil)
	tr := srv.Client().Transport.(*http.Transport).Clone()
	tr.DialContext = func(_ context.Context, _, _ string) (net.Conn, error) { return net.Dial("tcp", w.addr) }
	tr.TLSClientConfig.ServerName = "example.com" // httptest's certificate names it
	resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Get("https://example.com/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "upstream example.com" {
		t.Errorf("body %q", body)
	}
	f := w.lastFlow(t)
	if f.Layer != rules.LayerTLS || f.Host != "example.com" || f.Addr != dst.Addr() || f.Port != dst.Port() || f.Proto != rules.ProtoTCP {
		t.Errorf("flow %v (%+v)", f, f)
	}
}

func TestTransparentRejectBySNI(t *testing.T) {
	_, dst := tlsUpstream(t)
	w := newTransparentWorld(t, dst, blockName("blocked.example", rules.ActionReject), nil)
	start := time.Now()
	c, err := tls.Dial("tcp", w.addr, &tls.Config{ServerName: "blocked.example", InsecureSkipVerify: true})
	if err == nil {
		c.Close()
		t.Fatal("TLS to a rejected name succeeded")
	}
	if !strings.Contains(err.Error(), "access denied") {
		t.Errorf("err = %v, want a TLS access_denied alert", err)
	}
	if el := time.Since(start); el > 150*time.Millisecond+time.Second {
		t.Errorf("the alert took %v; the ClientHello should be decided as soon as it is read", el)
	}
}

func TestTransparentRejectByRememberedName(t *testing.T) {
	// No SNI, no bytes at all (a server-first protocol): the address's
	// name from the DNS memory decides, after the peek bound.
	dst := netip.MustParseAddrPort("127.0.0.1:9") // nothing listens: an early dial fails
	w := newTransparentWorld(t, dst, blockName("bootnode.example", rules.ActionReject),
		map[netip.Addr]string{dst.Addr(): "bootnode.example"})
	c, err := net.Dial("tcp", w.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	start := time.Now()
	_, err = c.Read(make([]byte, 1))
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("read: %v, want a reset", err)
	}
	if el := time.Since(start); el < 150*time.Millisecond || el > 2*time.Second {
		t.Errorf("reset after %v, want after the 200ms peek", el)
	}
	if f := w.lastFlow(t); f.Layer != rules.LayerTCP || f.Host != "bootnode.example" || f.Addr != dst.Addr() {
		t.Errorf("flow %v", f)
	}
}

func TestTransparentRejectHTTP(t *testing.T) {
	dst := netip.MustParseAddrPort("127.0.0.1:9")
	w := newTransparentWorld(t, dst, blockName("api.etherscan.io", rules.ActionReject), nil)
	tr := &http.Transport{DialContext: func(context.Context, string, string) (net.Conn, error) { return net.Dial("tcp", w.addr) }}
	resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Get("http://api.etherscan.io/api")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 403 || resp.Header.Get(HeaderScenario) != "test" {
		t.Errorf("%s %v", resp.Status, resp.Header)
	}
}

func TestTransparentBlackhole(t *testing.T) {
	dst := netip.MustParseAddrPort("127.0.0.1:9")
	w := newTransparentWorld(t, dst, blockName("mainnet.infura.io", rules.ActionBlackhole), nil)
	c, err := net.Dial("tcp", w.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	c.Write([]byte("GET / HTTP/1.1\r\nHost: mainnet.infura.io\r\n\r\n"))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := c.Read(make([]byte, 1))
	el := time.Since(start)
	if n != 0 || err == nil {
		t.Errorf("read %d, %v: want silence then a close", n, err)
	}
	if el < 400*time.Millisecond || el > 3*time.Second {
		t.Errorf("held %v, want the 500ms blackhole timeout", el)
	}
}

func TestTransparentNotRedirected(t *testing.T) {
	w := newTransparentWorld(t, netip.AddrPort{}, blockName("x", rules.ActionReject), nil)
	c, err := net.Dial("tcp", w.addr)
	if err == nil { // the reset may come before connect returns
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = c.Read(make([]byte, 1))
	}
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("read: %v, want a reset: a connection to the listener itself must not be relayed to itself", err)
	}
}

// TestTransparentServerFirst: a client that waits for the server's
// banner (SSH, SMTP) gets it long before the peek bound, and the session
// is relayed both ways.
func TestTransparentServerFirst(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.WriteString(c, "SSH-2.0-test\r\n")
		io.Copy(c, c)
	}()
	w := newTransparentWorldPeek(t, netip.MustParseAddrPort(l.Addr().String()), blockName("x", rules.ActionReject), nil, 5*time.Second)
	c, err := net.Dial("tcp", w.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	start := time.Now()
	banner := make([]byte, 14)
	if _, err := io.ReadFull(c, banner); err != nil || string(banner) != "SSH-2.0-test\r\n" {
		t.Fatalf("banner %q %v", banner, err)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Errorf("the server's banner took %v; the 5s peek should not hold it", el)
	}
	io.WriteString(c, "ping")
	echo := make([]byte, 4)
	if _, err := io.ReadFull(c, echo); err != nil || string(echo) != "ping" {
		t.Errorf("echo %q %v", echo, err)
	}
}

// TestTransparentCutOnSwitch: an open relayed connection is cut with a
// reset when a scenario that blocks its destination is switched on.
func TestTransparentCutOnSwitch(t *testing.T) {
	echo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
	dst := netip.MustParseAddrPort(echo.Addr().String())
	set, err := rules.LoadFS(fstest.MapFS{"s.yaml": {Data: []byte(`
scenario: cut
optional: true
rules:
  - {ips: [127.0.0.1], ports: [` + strconv.Itoa(int(dst.Port())) + `], action: reject, clients: [127.0.0.1]}
`)}}, "s.yaml")
	if err != nil {
		t.Fatal(err)
	}
	e, err := rules.NewEngine(set, nil)
	if err != nil {
		t.Fatal(err)
	}
	px, err := New(Config{Decider: e, OrigDst: func(net.Conn) (netip.AddrPort, error) { return dst, nil }, PeekTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- px.ServeTransparent(l) }()
	defer func() {
		px.Close()
		<-done
	}()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "hello")
	if _, err := io.ReadFull(c, make([]byte, 5)); err != nil {
		t.Fatalf("relay before the switch: %v", err)
	}
	if err := e.Switch("cut", true, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("after the switch: %v, want a reset", err)
	}
}

func TestTransparentTLSReset(t *testing.T) {
	_, dst := tlsUpstream(t)
	for _, c := range []struct {
		close rules.CloseMode
		want  string
	}{{rules.CloseRST, "reset"}, {rules.CloseAlert, "handshake failure"}} {
		r := &rules.Rule{Scenario: "test", Action: rules.ActionTLSReset, Params: rules.Params{Close: c.close}}
		w := newTransparentWorld(t, dst, func(f rules.Flow) rules.Decision {
			if f.Host == "blocked.example" {
				return rules.Decision{Action: r.Action, Rule: r}
			}
			return rules.Decision{}
		}, nil)
		_, err := tls.Dial("tcp", w.addr, &tls.Config{ServerName: "blocked.example", InsecureSkipVerify: true})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("tls_reset close %v: %v, want %q", c.close, err, c.want)
		}
	}
}
