package dnsblock

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/chaos-unicorn/unicorn/dnsblock/dnstest"
	"github.com/chaos-unicorn/unicorn/rules"
	"github.com/miekg/dns"
)

func discardLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

func TestRefusedClientLoggedOnce(t *testing.T) {
	up := dnstest.NewUpstream().WithAnswer("example.com.", "example.com. 300 IN A 192.0.2.1")
	addr, _ := up.Start(t)
	dec := &blocker{rule: testRule(rules.ActionReject, rules.Params{})}
	w := newWorld(t, Config{
		Decider: dec, Upstreams: []string{addr},
		Clients: rules.NewClientSet(netip.MustParsePrefix("192.0.2.0/24")),
	})
	for i := range 10 {
		m := query("example.com.", dns.TypeA, true)
		m.SetEdns0(4096, true)
		network := transports[i%2]
		r := w.ask(t, network, m)
		if r.Rcode != dns.RcodeRefused {
			t.Fatalf("%s: rcode %s, want REFUSED", network, dns.RcodeToString[r.Rcode])
		}
		if len(r.Answer)+len(r.Ns)+len(r.Extra) != 0 {
			t.Errorf("%s: refusal carries records %v %v %v", network, r.Answer, r.Ns, r.Extra)
		}
		q, _ := m.Pack()
		p, _ := r.Pack()
		if len(p) > len(q) {
			t.Errorf("refusal of %d bytes to a query of %d", len(p), len(q))
		}
	}
	if up.Calls() != 0 || dec.calls.Load() != 0 {
		t.Errorf("a stranger's questions were decided (%d) or forwarded (%d)", dec.calls.Load(), up.Calls())
	}
	if n := w.logs.count("dns client refused"); n != 1 {
		t.Errorf("%d refusal log lines for 10 queries, want 1:\n%s", n, w.logs)
	}
	if !strings.Contains(w.logs.String(), "client=127.0.0.1") {
		t.Errorf("refusal log does not name the client:\n%s", w.logs)
	}
}

func TestMalformedPacketsDoNotStopTheServer(t *testing.T) {
	up := dnstest.NewUpstream().WithAnswer("example.com.", "example.com. 300 IN A 192.0.2.1")
	addr, _ := up.Start(t)
	w := allowWorld(t, 0, addr)

	c, err := net.Dial("udp", w.udp)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rng := rand.New(rand.NewPCG(1, 2))
	var packets [][]byte
	for range 50 {
		b := make([]byte, rng.IntN(100))
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		packets = append(packets, b)
	}
	zeroQ := make([]byte, 12) // a query header with no question
	zeroQ[1] = 1
	badName := []byte{0, 2, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 63, 'a'} // label runs past the end
	packets = append(packets, zeroQ, badName, []byte{1})
	for _, p := range packets {
		if _, err := c.Write(p); err != nil {
			t.Fatal(err)
		}
	}
	// A zero-question query over TCP too.
	tc, err := net.Dial("tcp", w.tcp)
	if err != nil {
		t.Fatal(err)
	}
	tc.Write([]byte{0, 12})
	tc.Write(zeroQ)
	tc.Close()

	for _, network := range transports {
		r := w.ask(t, network, query("example.com.", dns.TypeA, true))
		if len(r.Answer) != 1 {
			t.Errorf("%s: answer %v after garbage", network, r.Answer)
		}
	}
}

func TestShutdownEndsDelaysAndLeaksNoGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	func() {
		up := dnstest.NewUpstream().WithAnswer("infura.io.", "infura.io. 300 IN A 198.51.100.1")
		addr, cleanup := up.Start(t)
		defer cleanup()
		silent := dnstest.NewUpstream().WithSilence()
		silentAddr, silentCleanup := silent.Start(t)
		defer silentCleanup()

		dec := &blocker{rule: testRule(rules.ActionDelay, rules.Params{Latency: time.Hour})}
		srv, err := NewServer(Config{Decider: dec, Upstreams: []string{addr}, Logger: discardLogger()})
		if err != nil {
			t.Fatal(err)
		}
		srv2, err := NewServer(Config{Decider: &blocker{}, Upstreams: []string{silentAddr}, Timeout: time.Hour, Logger: discardLogger()})
		if err != nil {
			t.Fatal(err)
		}
		w := &world{srv: srv}
		w2 := &world{srv: srv2}
		served := make(chan error, 2)
		for _, x := range []*world{w, w2} {
			pc, err := net.ListenPacket("udp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			x.udp, x.tcp = pc.LocalAddr().String(), l.Addr().String()
			go func() { served <- x.srv.Serve(context.Background(), pc, l) }()
		}

		// Questions that hang: a delay of an hour, an upstream that never
		// answers, a TCP connection left open. Wait until each handler runs.
		type result struct {
			r   *dns.Msg
			err error
		}
		pending := make(chan result, 4)
		for _, x := range []*world{w, w2} {
			for _, network := range transports {
				go func() {
					r, err := x.exchange(network, query("infura.io.", dns.TypeA, true), 2*time.Second)
					pending <- result{r, err}
				}()
			}
		}
		deadline := time.Now().Add(5 * time.Second)
		for (dec.calls.Load() < 2 || silent.Calls() < 2) && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		if dec.calls.Load() < 2 || silent.Calls() < 2 {
			t.Fatalf("questions did not arrive: %d decided, %d at the silent upstream", dec.calls.Load(), silent.Calls())
		}

		start := time.Now()
		srv.Shutdown()
		srv2.Shutdown()
		if took := time.Since(start); took > 2*time.Second {
			t.Errorf("Shutdown took %v with pending waits", took)
		}
		for range 2 {
			if err := <-served; err != nil {
				t.Errorf("Serve: %v", err)
			}
		}
		// Stopping cuts delays short without an answer; an upstream
		// exchange cut short gets SERVFAIL.
		for range 4 {
			if res := <-pending; res.err == nil && res.r.Rcode != dns.RcodeServerFailure {
				t.Errorf("a pending question got %v after Shutdown", res.r)
			}
		}
		if err := srv.Serve(context.Background(), nil, mustListen(t)); !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve after Shutdown: %v, want ErrServerClosed", err)
		}
	}()

	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<20)
		t.Errorf("%d goroutines before, %d after:\n%s", before, n, buf[:runtime.Stack(buf, true)])
	}
}

func mustListen(t *testing.T) net.Listener {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestServeStopsWithContext(t *testing.T) {
	srv, err := NewServer(Config{Decider: &blocker{}, Upstreams: []string{"127.0.0.1:1"}, Logger: discardLogger()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, nil, mustListen(t)) }()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after its context was cancelled")
	}
	srv.Shutdown() // after Serve returned: a no-op
}

func TestNewServerErrors(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want []string
	}{
		{Config{}, []string{"Decider is mandatory", "Upstreams is mandatory"}},
		{Config{Decider: &blocker{}, Upstreams: []string{"dns.google"}}, []string{`upstream "dns.google" is not an IP address`}},
		{Config{Decider: &blocker{}, Upstreams: []string{"192.0.2.1"}, Timeout: -1}, []string{"Timeout -1ns is negative"}},
	} {
		_, err := NewServer(tc.cfg)
		if err == nil {
			t.Errorf("%+v: no error", tc.cfg)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("error %q lacks %q", err, w)
			}
		}
	}
}
