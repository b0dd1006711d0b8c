package proxy_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/chaos-unicorn/unicorn/rules"
)

func TestConnectAllowed(t *testing.T) {
	up := newUpstream(t, true)
	w := newWorld(t, worldConfig{Hosts: testHosts})
	for _, c := range []struct{ host, serverName string }{
		{"127.0.0.1", ""},
		// httptest's certificate names example.com, not the test name.
		{"api.example.test", "example.com"},
	} {
		t.Run(c.host, func(t *testing.T) {
			resp, err := w.client(10*time.Second, up.Roots(), c.serverName).Get(up.URLFor(c.host))
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
}

func TestConnectRejected(t *testing.T) {
	up := newUpstream(t, true)
	w := newWorld(t, worldConfig{Decide: func(rules.Flow) rules.Decision {
		return decision(rules.ActionReject, rules.Params{})
	}})
	start := time.Now()
	_, err := w.client(10*time.Second, up.Roots(), "").Get(up.URLFor("127.0.0.1"))
	if err == nil || !strings.Contains(err.Error(), "Forbidden") {
		t.Fatalf("err = %v, want Forbidden", err)
	}
	within(t, "refusal", time.Since(start), 0, 500*time.Millisecond)
	if up.Hits() != 0 {
		t.Errorf("upstream got %d requests", up.Hits())
	}
}

func TestConnectRejectHeaders(t *testing.T) {
	w := newWorld(t, worldConfig{Decide: func(rules.Flow) rules.Decision {
		return decision(rules.ActionReject, rules.Params{})
	}})
	resp := rawConnect(t, w.Addr, "127.0.0.1:9", "")
	if resp.StatusCode != 403 || resp.Header.Get("X-Unicorn-Rule") != testRef || resp.Header.Get("X-Unicorn-Scenario") != "cud-2019" {
		t.Fatalf("got %d %v", resp.StatusCode, resp.Header)
	}
}

func TestBlackhole(t *testing.T) {
	plain, tlsUp := newUpstream(t, false), newUpstream(t, true)
	hole := func(rules.Flow) rules.Decision { return decision(rules.ActionBlackhole, rules.Params{}) }
	for _, c := range []struct {
		name          string
		url           string
		hold, timeout time.Duration
		lo, hi        time.Duration
	}{
		{"plain/proxy-gives-up", plain.URLFor("127.0.0.1"), 300 * time.Millisecond, 2 * time.Second, 280 * time.Millisecond, 1500 * time.Millisecond},
		{"connect/proxy-gives-up", tlsUp.URLFor("127.0.0.1"), 300 * time.Millisecond, 2 * time.Second, 280 * time.Millisecond, 1500 * time.Millisecond},
		{"plain/client-gives-up", plain.URLFor("127.0.0.1"), 30 * time.Second, 200 * time.Millisecond, 180 * time.Millisecond, 1000 * time.Millisecond},
		{"connect/client-gives-up", tlsUp.URLFor("127.0.0.1"), 30 * time.Second, 200 * time.Millisecond, 180 * time.Millisecond, 1000 * time.Millisecond},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := newWorld(t, worldConfig{Decide: hole, Blackhole: c.hold})
			start := time.Now()
			resp, err := w.client(c.timeout, tlsUp.Roots(), "").Get(c.url)
			if err == nil {
				resp.Body.Close()
				t.Fatalf("blackholed request answered %d", resp.StatusCode)
			}
			within(t, "blackhole", time.Since(start), c.lo, c.hi)
			if strings.HasPrefix(c.name, "plain") {
				// The proxy lets go as soon as the client does. (Go's
				// transport keeps a CONNECT it gave up on open in the
				// background; see connect/client-closes.)
				eventually(t, 2*time.Second, "proxy still holds the client", func() bool { return w.Proxy.Held() == 0 })
			}
		})
	}
	t.Run("connect/client-closes", func(t *testing.T) {
		w := newWorld(t, worldConfig{Decide: hole, Blackhole: 30 * time.Second})
		c, br := rawConnectConn(t, w.Addr, "127.0.0.1:9", "")
		eventually(t, 2*time.Second, "proxy does not hold the client", func() bool { return w.Proxy.Held() == 1 })
		c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if n, err := br.Read(make([]byte, 1)); n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("blackholed CONNECT was answered: %d %v", n, err)
		}
		c.Close()
		eventually(t, 2*time.Second, "proxy still holds the client", func() bool { return w.Proxy.Held() == 0 })
	})
	if plain.Hits()+tlsUp.Hits() != 0 {
		t.Errorf("upstreams got requests")
	}
}

func TestSecondDecisionByAddress(t *testing.T) {
	plain, tlsUp := newUpstream(t, false), newUpstream(t, true)
	// The Status cluster is blocked by address and port, not by name.
	blockAddr := func(f rules.Flow) rules.Decision {
		if f.Addr == loopback && (f.Port == plain.Port || f.Port == tlsUp.Port) {
			return decision(rules.ActionReject, rules.Params{})
		}
		return rules.Decision{}
	}
	w := newWorld(t, worldConfig{Hosts: testHosts, Decide: blockAddr})

	resp, _ := w.get(plain.URLFor("api.example.test"))
	if resp.StatusCode != 403 || resp.Header.Get("X-Unicorn-Rule") != testRef {
		t.Errorf("plain: got %d %q", resp.StatusCode, resp.Header.Get("X-Unicorn-Rule"))
	}
	flows := w.Rules.Flows()
	if len(flows) != 2 || flows[1].Layer != rules.LayerTCP || flows[1].Host != "api.example.test" {
		t.Errorf("flows %v, want the name at http then the address at tcp", flows)
	}
	_, err := w.client(5*time.Second, tlsUp.Roots(), "example.com").Get(tlsUp.URLFor("api.example.test"))
	if err == nil || !strings.Contains(err.Error(), "Forbidden") {
		t.Errorf("connect: err = %v, want Forbidden", err)
	}
	if plain.Hits()+tlsUp.Hits() != 0 {
		t.Errorf("upstreams got requests")
	}
}

func TestLiteralAddressDecidedOnce(t *testing.T) {
	up := newUpstream(t, true)
	w := newWorld(t, worldConfig{Decide: func(f rules.Flow) rules.Decision {
		if f.Addr == loopback && f.Port == up.Port && f.Host == "" {
			return decision(rules.ActionReject, rules.Params{})
		}
		return rules.Decision{}
	}})
	_, err := w.client(5*time.Second, up.Roots(), "").Get(up.URLFor("127.0.0.1"))
	if err == nil || !strings.Contains(err.Error(), "Forbidden") {
		t.Fatalf("err = %v, want Forbidden", err)
	}
	want := []rules.Flow{{Client: loopback, Layer: rules.LayerHTTP, Addr: loopback, Port: up.Port, Proto: rules.ProtoTCP}}
	if got := w.Rules.Flows(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("flows %v, want %v", got, want)
	}
}

// rawConnect sends a CONNECT for target (plus early bytes) on a new
// connection and returns the response head; the connection closes with t.
func rawConnect(t *testing.T, proxyAddr, target, early string) *http.Response {
	c, br := rawConnectConn(t, proxyAddr, target, early)
	_ = c
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func rawConnectConn(t *testing.T, proxyAddr, target, early string) (*net.TCPConn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", proxyAddr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n%s", target, target, early)
	return c.(*net.TCPConn), bufio.NewReader(c)
}

// newCounter starts a TCP server that reads until EOF, then answers with
// the bytes it read prefixed by "got N: " and closes. It stops when t ends
// or when stop is called, whichever is first.
func newCounter(t *testing.T) (addr string, stop func()) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	stop = func() { l.Close(); <-done }
	t.Cleanup(stop)
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				b, _ := io.ReadAll(c)
				fmt.Fprintf(c, "got %d: %s", len(b), b)
			}()
		}
	}()
	return l.Addr().String(), stop
}

func TestConnectHalfCloseAndEarlyBytes(t *testing.T) {
	target, _ := newCounter(t)
	w := newWorld(t, worldConfig{})
	// The client sends its first bytes in the same write as the CONNECT
	// head, then more after the 200, then half-closes and reads the reply.
	c, br := rawConnectConn(t, w.Addr, target, "early ")
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("CONNECT: %v %v", resp, err)
	}
	io.WriteString(c, "late")
	c.CloseWrite()
	got, err := io.ReadAll(br)
	if err != nil || string(got) != "got 10: early late" {
		t.Fatalf("reply %q, %v", got, err)
	}
}
