package proxy_test

import (
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/chaos-unicorn/unicorn/proxy"
	"github.com/chaos-unicorn/unicorn/rules"
)

func TestNewNeedsDecider(t *testing.T) {
	if _, err := proxy.New(proxy.Config{}); err == nil {
		t.Fatal("New without Decider: no error")
	}
}

func TestLandingPage(t *testing.T) {
	w := newWorld(t, worldConfig{Info: func(netip.Addr) proxy.PageInfo {
		return proxy.PageInfo{
			Scenarios: []proxy.ScenarioInfo{{Name: "cud-2019", Description: "Infura is down", Services: []string{"infura"},
				Until: time.Date(2019, 4, 1, 9, 10, 0, 0, time.UTC)}},
			Blocked: []proxy.BlockedInfo{{Time: time.Date(2019, 4, 1, 9, 1, 2, 0, time.UTC), Target: "mainnet.infura.io",
				Layer: "dns", Outcome: "NXDOMAIN", Scenario: "cud-2019", Rule: "cud-2019.yaml:41"}},
			DNSAddrs: []string{"0.0.0.0:53", "192.0.2.1:5353"},
		}
	}})
	get := func(path string) (*http.Response, string) {
		resp, err := http.Get("http://" + w.Addr + path) // straight to the proxy, not through it
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	resp, body := get("/")
	_, port, _ := net.SplitHostPort(w.Addr)
	host, _, _ := net.SplitHostPort(w.Addr)
	for _, s := range []string{"cud-2019", "Infura is down", `name="viewport"`, "<code>" + port + "</code>",
		"DNS → Manual: <code>" + host + "</code> <code>", // the wildcard DNS listener, as the device reached it
		"<code>192.0.2.1:5353</code> (phones can only use port 53",
		"until 09:10:00", // the auto-revert time
		"<small>09:01:02</small> <code>mainnet.infura.io</code> (dns): <b>NXDOMAIN</b>, by cud-2019 (cud-2019.yaml:41)"} {
		if !strings.Contains(body, s) {
			t.Errorf("page lacks %q", s)
		}
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
		t.Errorf("Content-Type %q", ct)
	}
	resp, body = get("/proxy.pac")
	if !strings.Contains(body, `"PROXY `+w.Addr+`"`) || !strings.Contains(body, "FindProxyForURL") {
		t.Errorf("PAC file %q", body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/x-ns-proxy-autoconfig" {
		t.Errorf("PAC Content-Type %q; phones ignore a PAC file served as anything else", ct)
	}
	if resp, _ = get("/nothing"); resp.StatusCode != 404 {
		t.Errorf("unknown path: %d", resp.StatusCode)
	}
	if len(w.Rules.Flows()) != 0 {
		t.Errorf("landing page asked the rules: %v", w.Rules.Flows())
	}
}

func TestClientNotAllowed(t *testing.T) {
	plain, tlsUp := newUpstream(t, false), newUpstream(t, true)
	w := newWorld(t, worldConfig{Clients: rules.NewClientSet(netip.MustParsePrefix("192.0.2.0/24"))})
	for range 2 {
		resp, body := w.get(plain.URLFor("127.0.0.1"))
		if resp.StatusCode != 403 || !strings.Contains(body, "not allowed") {
			t.Errorf("plain: %d %q", resp.StatusCode, body)
		}
	}
	_, err := w.client(5*time.Second, tlsUp.Roots(), "").Get(tlsUp.URLFor("127.0.0.1"))
	if err == nil || !strings.Contains(err.Error(), "Forbidden") {
		t.Errorf("connect: err = %v", err)
	}
	if n := len(w.Logs.Find("client not allowed")); n != 1 {
		t.Errorf("logged %d times, want once", n)
	}
	if plain.Hits()+tlsUp.Hits() != 0 || len(w.Rules.Flows()) != 0 {
		t.Errorf("a refused client reached the rules or an upstream")
	}
}

func TestMalformed(t *testing.T) {
	up := newUpstream(t, false)
	w := newWorld(t, worldConfig{})
	for _, in := range []string{
		"GARBAGE\r\n\r\n",
		"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
		"GET http://[::1 HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET http://127.0.0.1:0/ HTTP/1.1\r\nHost: 127.0.0.1:0\r\n\r\n",
		"GET http://127.0.0.1:99999/ HTTP/1.1\r\nHost: 127.0.0.1:99999\r\n\r\n",
		"GET ftp://127.0.0.1/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
		"CONNECT nohost HTTP/1.1\r\nHost: nohost\r\n\r\n",
		"CONNECT :443 HTTP/1.1\r\nHost: :443\r\n\r\n",
		"CONNECT 127.0.0.1:0 HTTP/1.1\r\nHost: 127.0.0.1:0\r\n\r\n",
		"CONNECT 127.0.0.1:443 HTTP/1.1\r\nContent-Length: 5\r\n\r\nabc",
		"GET http://127.0.0.1/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX: ", // head cut short
		"",
	} {
		c, err := net.Dial("tcp", w.Addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, in)
		c.(*net.TCPConn).CloseWrite()
		if _, err := io.ReadAll(c); err != nil {
			t.Errorf("%q: %v", in, err)
		}
		c.Close()
	}
	resp, body := w.get(up.URLFor("127.0.0.1"))
	if resp.StatusCode != 200 || body != Body {
		t.Fatalf("next client: %d %q", resp.StatusCode, body)
	}
}

func TestCloseEndsTunnelsAndHolds(t *testing.T) {
	target, _ := newCounter(t)
	up := newUpstream(t, false)
	w := newWorld(t, worldConfig{Blackhole: time.Minute, Decide: func(f rules.Flow) rules.Decision {
		if f.Port == up.Port || f.Port == 9 {
			return decision(rules.ActionBlackhole, rules.Params{})
		}
		return rules.Decision{}
	}})
	tunnel, tbr := rawConnectConn(t, w.Addr, target, "")
	if resp, err := http.ReadResponse(tbr, &http.Request{Method: http.MethodConnect}); err != nil || resp.StatusCode != 200 {
		t.Fatalf("tunnel: %v %v", resp, err)
	}
	_, hbr := rawConnectConn(t, w.Addr, "127.0.0.1:9", "")
	plainErr := make(chan error, 1)
	go func() {
		resp, err := w.client(0, nil, "").Get(up.URLFor("127.0.0.1"))
		if err == nil {
			resp.Body.Close()
		}
		plainErr <- err
	}()
	eventually(t, 5*time.Second, "holds not started", func() bool { return w.Proxy.Held() == 2 })

	start := time.Now()
	if err := w.Proxy.Close(); err != nil {
		t.Fatal(err)
	}
	within(t, "Close", time.Since(start), 0, 2*time.Second)
	if _, err := io.ReadAll(tbr); err != nil {
		t.Errorf("tunnel not closed: %v", err)
	}
	_ = tunnel
	if b, err := io.ReadAll(hbr); err != nil || len(b) != 0 {
		t.Errorf("blackholed CONNECT: %q %v", b, err)
	}
	if err := <-plainErr; err == nil {
		t.Errorf("blackholed plain request got an answer")
	}
}

func TestNoGoroutineLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	func() {
		plain, tlsUp := newUpstream(t, false), newUpstream(t, true)
		target, stopCounter := newCounter(t)
		p, err := proxy.New(proxy.Config{
			Decider: rules.DeciderFunc(func(f rules.Flow) rules.Decision {
				switch f.Port {
				case 9:
					return decision(rules.ActionBlackhole, rules.Params{})
				case 10:
					return decision(rules.ActionReject, rules.Params{})
				}
				return rules.Decision{}
			}),
			BlackholeTimeout: 50 * time.Millisecond,
			Logger:           discardLogger(),
		})
		if err != nil {
			t.Fatal(err)
		}
		l, _ := net.Listen("tcp", "127.0.0.1:0")
		served := make(chan error, 1)
		go func() { served <- p.Serve(l) }()
		tr := &http.Transport{Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: l.Addr().String()}), TLSClientConfig: tlsFor(tlsUp)}
		cl := &http.Client{Transport: tr, Timeout: 5 * time.Second}
		for _, u := range []string{plain.URLFor("127.0.0.1"), tlsUp.URLFor("127.0.0.1"),
			"http://127.0.0.1:9/", "https://127.0.0.1:9/", "http://127.0.0.1:10/", "https://127.0.0.1:10/"} {
			if resp, err := cl.Get(u); err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}
		c, br := rawConnectConn(t, l.Addr().String(), target, "x")
		http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
		_ = c
		tr.CloseIdleConnections()
		p.Close()
		<-served
		c.Close()
		plain.Close()
		tlsUp.Close()
		stopCounter()
	}()
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
