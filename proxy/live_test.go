package proxy_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chaos-unicorn/unicorn/proxy"
	"github.com/chaos-unicorn/unicorn/rules"
)

// switchable is a rule set the test changes while tunnels are open, with
// the change subscription the proxy takes (Config.OnChange).
type switchable struct {
	d    atomic.Pointer[rules.Decision]
	mu   sync.Mutex
	subs []func()
}

func newSwitchable() *switchable {
	s := &switchable{}
	s.d.Store(&rules.Decision{})
	return s
}

func (s *switchable) decide(rules.Flow) rules.Decision { return *s.d.Load() }

func (s *switchable) onChange(fn func()) func() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.subs = append(s.subs, fn)
	return func() {}
}

// set puts d in force and tells the subscribers, as Engine.Switch does.
func (s *switchable) set(d rules.Decision) {
	s.d.Store(&d)
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, fn := range s.subs {
		fn()
	}
}

// liveRule is a rule of action a with params ps and on_existing o.
func liveRule(a rules.Action, ps rules.Params, o rules.OnExisting) rules.Decision {
	d := decision(a, ps)
	d.Rule.OnExisting = o
	return d
}

// echoed sends a line through c and checks that it comes back.
func echoed(t *testing.T, c net.Conn, br *bufio.Reader, i int) {
	t.Helper()
	fmt.Fprintf(c, "line %d\n", i)
	line, err := br.ReadString('\n')
	if err != nil || line != fmt.Sprintf("line %d\n", i) {
		t.Fatalf("echo %d: %q, %v", i, line, err)
	}
}

func TestLiveCut(t *testing.T) {
	echo := echoServer(t)
	s := newSwitchable()
	w := newWorld(t, worldConfig{Decide: s.decide, OnChange: s.onChange})
	c := tunnel(t, w.Addr, echo)
	br := bufio.NewReader(c)
	echoed(t, c, br, 0)

	// A scenario switched on whose rule rejects the target: on_existing
	// defaults to cut for reject.
	start := time.Now()
	s.set(decision(rules.ActionReject, rules.Params{}))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := br.ReadByte(); err == nil || isTimeout(err) {
		t.Fatalf("read after the switch: %v, want the tunnel closed", err)
	}
	within(t, "tunnel cut", time.Since(start), 0, time.Second)
	eventually(t, 2*time.Second, "tunnel gone from the registry", func() bool { return w.Proxy.Tunnels() == 0 })
	if len(w.Logs.Find("live tunnel: cut by a rule change")) != 1 {
		t.Error("the cut was not logged")
	}
}

func TestLiveKeep(t *testing.T) {
	echo := echoServer(t)
	s := newSwitchable()
	w := newWorld(t, worldConfig{Decide: s.decide, OnChange: s.onChange})
	c := tunnel(t, w.Addr, echo)
	br := bufio.NewReader(c)
	echoed(t, c, br, 0)
	s.set(liveRule(rules.ActionReject, rules.Params{}, rules.OnExistingKeep))
	time.Sleep(200 * time.Millisecond) // let the re-decision run; nothing may happen
	echoed(t, c, br, 1)
	// New tunnels are refused at once.
	if resp := rawConnect(t, w.Addr, echo, ""); resp.StatusCode != 403 {
		t.Fatalf("new CONNECT: %d, want 403", resp.StatusCode)
	}
}

// demandServer sends, for each line "N" it reads, N bytes.
func demandServer(t *testing.T) string {
	return tcpServer(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			var n int64
			if _, err := fmt.Fscanln(br, &n); err != nil {
				return
			}
			if _, err := io.Copy(c, io.LimitReader(zeros{}, n)); err != nil {
				return
			}
		}
	})
}

// fetch asks the demand server for n bytes through c and returns how long
// they took to arrive.
func fetch(t *testing.T, c net.Conn, n int64) time.Duration {
	t.Helper()
	start := time.Now()
	fmt.Fprintf(c, "%d\n", n)
	if _, err := io.CopyN(io.Discard, c, n); err != nil {
		t.Fatal(err)
	}
	return time.Since(start)
}

func TestLiveDegradeThrottle(t *testing.T) {
	const rate = 64 << 10
	s := newSwitchable()
	w := newWorld(t, worldConfig{Decide: s.decide, OnChange: s.onChange})
	c := tunnel(t, w.Addr, demandServer(t))
	within(t, "1 MiB before the switch", fetch(t, c, 1<<20), 0, time.Second)

	// A throttle scenario switched on, for open connections too.
	s.set(liveRule(rules.ActionThrottle, rules.Params{Rate: rate, Direction: rules.DirDown}, rules.OnExistingDegrade))
	eventually(t, 2*time.Second, "degrade logged", func() bool {
		return len(w.Logs.Find("live tunnel: degraded by a rule change")) == 1
	})
	within(t, "64 KiB at 64 KiB/s", fetch(t, c, 64<<10), 900*time.Millisecond, 1200*time.Millisecond)

	// Switched off again: the fault is lifted.
	s.set(rules.Decision{})
	eventually(t, 2*time.Second, "lift logged", func() bool {
		return len(w.Logs.Find("live tunnel: fault lifted")) == 1
	})
	within(t, "1 MiB after the lift", fetch(t, c, 1<<20), 0, time.Second)
}

// TestLiveEngineSwitch switches a scenario on in a real Engine while a
// CONNECT tunnel is open: its reject rule (on_existing: cut by default)
// closes the tunnel within a second; a throttle rule with degrade slows
// another.
func TestLiveEngineSwitch(t *testing.T) {
	echo := echoServer(t)
	demand := demandServer(t)
	e := ruleEngine(t, "live.yaml", `
scenario: outage
optional: true
rules:
  - {ips: [127.0.0.1], ports: [`+portOf(t, echo)+`], action: reject}
  - {ips: [127.0.0.1], ports: [`+portOf(t, demand)+`], action: throttle, rate: 64KiB/s, direction: down, on_existing: degrade}
`, false)
	w := newWorld(t, worldConfig{Engine: e})
	c := tunnel(t, w.Addr, echo)
	br := bufio.NewReader(c)
	echoed(t, c, br, 0)
	slow := tunnel(t, w.Addr, demand)
	within(t, "1 MiB before the switch", fetch(t, slow, 1<<20), 0, time.Second)

	start := time.Now()
	if err := e.Switch("outage", true, nil); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := br.ReadByte(); err == nil || isTimeout(err) {
		t.Fatalf("read after the switch: %v, want the tunnel closed", err)
	}
	within(t, "tunnel cut after the switch", time.Since(start), 0, time.Second)
	eventually(t, 2*time.Second, "degrade logged", func() bool {
		return len(w.Logs.Find("live tunnel: degraded by a rule change")) == 1
	})
	within(t, "64 KiB at 64 KiB/s", fetch(t, slow, 64<<10), 900*time.Millisecond, 1200*time.Millisecond)
	if resp := rawConnect(t, w.Addr, echo, ""); resp.StatusCode != 403 {
		t.Fatalf("new CONNECT: %d, want 403", resp.StatusCode)
	}
}

func portOf(t *testing.T, addr string) string {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestLivePhases: a rule's phases move with the engine's clock, which
// announces nothing; the registry's periodic re-decision cuts an open
// tunnel once the rule's reject phase begins. A probability rule switched
// on leaves open tunnels alone: it draws once per flow.
func TestLivePhases(t *testing.T) {
	echo := echoServer(t)
	e := ruleEngine(t, "phases.yaml", `
scenario: phased
optional: true
rules:
  - ips: [127.0.0.1]
    ports: [`+portOf(t, echo)+`]
    phases:
      - {for: 10m, action: throttle, rate: 1MiB/s}
      - {action: reject}
`, false)
	var mu sync.Mutex
	now := time.Date(2026, 4, 1, 9, 0, 0, 0, time.UTC)
	e.SetClock(func() time.Time { mu.Lock(); defer mu.Unlock(); return now })
	if err := e.Switch("phased", true, nil); err != nil {
		t.Fatal(err)
	}
	w := newWorld(t, worldConfig{Engine: e})
	c := tunnel(t, w.Addr, echo)
	br := bufio.NewReader(c)
	echoed(t, c, br, 0)
	time.Sleep(1500 * time.Millisecond) // a periodic re-decision in the throttle phase: nothing changes
	echoed(t, c, br, 1)

	mu.Lock()
	now = now.Add(11 * time.Minute) // the reject phase
	mu.Unlock()
	start := time.Now()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := br.ReadByte(); err == nil || isTimeout(err) {
		t.Fatalf("read in the reject phase: %v, want the tunnel closed", err)
	}
	within(t, "cut after the phase began", time.Since(start), 0, 2*time.Second)
}

func TestLiveProbabilityKeeps(t *testing.T) {
	echo := echoServer(t)
	e := ruleEngine(t, "chance.yaml", `
scenario: flaky
optional: true
rules:
  - {ips: [127.0.0.1], ports: [`+portOf(t, echo)+`], action: reject, probability: 0.99}
`, false)
	w := newWorld(t, worldConfig{Engine: e})
	c := tunnel(t, w.Addr, echo)
	br := bufio.NewReader(c)
	echoed(t, c, br, 0)
	if err := e.Switch("flaky", true, nil); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond) // the switch and a periodic re-decision
	echoed(t, c, br, 1)
	if n := len(w.Logs.Find("live tunnel: cut by a rule change")); n != 0 {
		t.Errorf("cut %d times", n)
	}
}

// closedWithin checks that wc's connection ends within limit.
func closedWithin(t *testing.T, wc *wsClient, limit time.Duration) {
	t.Helper()
	deadline := time.After(limit)
	for {
		select {
		case _, ok := <-wc.in:
			if !ok {
				return
			}
		case <-deadline:
			t.Fatalf("the WebSocket is still open %v after the switch", limit)
		}
	}
}

// TestLiveWebSocketCut: a chat over a plain WebSocket through the proxy,
// and one over an intercepted wss:// connection, are taken down within a
// second when a rule that rejects their host is switched on.
func TestLiveWebSocketCut(t *testing.T) {
	t.Run("plain", func(t *testing.T) {
		const host = "ws.example.test"
		s := newSwitchable()
		w := newWorld(t, worldConfig{Hosts: map[string][]netip.Addr{host: {loopback}}, Decide: s.decide, OnChange: s.onChange})
		_, port := newWSUpstream(t, nil)
		wc := dialWS(t, w.URL, "ws://"+net.JoinHostPort(host, port)+"/ws", nil)
		checkEcho(t, wc)
		s.set(decision(rules.ActionReject, rules.Params{}))
		closedWithin(t, wc, time.Second)
	})
	t.Run("intercepted", func(t *testing.T) {
		s := newSwitchable()
		s.set(decision(rules.ActionRPCError, wsRPCParams))
		tw := newTLSWorldWith(t, true, func(wc *worldConfig) {
			wc.Decide, wc.OnChange = s.decide, s.onChange
		})
		_, port := newWSUpstream(t, tw)
		wc := dialWS(t, tw.URL, "wss://"+net.JoinHostPort(faultedHost, port)+"/ws", tw.roots)
		checkEcho(t, wc)
		s.set(decision(rules.ActionReject, rules.Params{}))
		closedWithin(t, wc, time.Second)
		if n := len(tw.Logs.Find("live tunnel: cut by a rule change")); n < 1 {
			t.Errorf("cut logged %d times", n)
		}
	})
}

// TestLiveBlackholeReleased: a CONNECT and a SOCKS request held in
// silence by a blackhole are closed within a second when the scenario is
// switched off, so the device retries at once instead of waiting for
// --blackhole-timeout; a retry then gets through. A rule that says keep
// holds on.
func TestLiveBlackholeReleased(t *testing.T) {
	echo := echoServer(t)
	engine := func(onExisting string) *rules.Engine {
		e := ruleEngine(t, "hole.yaml", `
scenario: hole
optional: true
rules:
  - {ips: [127.0.0.1], ports: [`+portOf(t, echo)+`], action: blackhole`+onExisting+`}
`, false)
		if err := e.Switch("hole", true, nil); err != nil {
			t.Fatal(err)
		}
		return e
	}
	// held reads from c until it ends or limit passes; it reports how long
	// the connection lasted and whether it ended.
	held := func(c net.Conn, limit time.Duration) (time.Duration, bool) {
		start := time.Now()
		c.SetReadDeadline(start.Add(limit))
		_, err := io.Copy(io.Discard, c)
		return time.Since(start), !isTimeout(err)
	}

	e := engine("")
	w := newSOCKSWorld(t, worldConfig{Engine: e, Blackhole: time.Minute}, proxy.SOCKSConfig{})
	connect, _ := rawConnectConn(t, w.Addr, echo, "")
	socks := socksDial(t, w.SOCKSAddr)
	ap := netip.MustParseAddrPort(echo)
	socks.Write(append([]byte{5, 1, 0}, socksRequest(1, ap.Addr().String(), ap.Port())...))
	io.ReadFull(socks, make([]byte, 2)) // the method choice; the reply never comes
	if d, ended := held(connect, 300*time.Millisecond); ended {
		t.Fatalf("the blackholed CONNECT ended after %v", d)
	}
	eventually(t, time.Second, "the held requests are not in the live registry", func() bool { return w.Proxy.Tunnels() == 2 })

	if err := e.Switch("hole", false, nil); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]net.Conn{"CONNECT": connect, "SOCKS": socks} {
		if d, ended := held(c, 3*time.Second); !ended || d > time.Second {
			t.Errorf("%s: held %v after the switch (ended %v), want closed within 1s", name, d, ended)
		}
	}
	c := tunnel(t, w.Addr, echo)
	echoed(t, c, bufio.NewReader(c), 0)
	if n := len(w.Logs.Find("live connection: released from a blackhole by a rule change")); n != 2 {
		t.Errorf("%d releases logged, want 2", n)
	}

	t.Run("keep", func(t *testing.T) {
		e := engine(", on_existing: keep")
		w := newWorld(t, worldConfig{Engine: e, Blackhole: time.Minute})
		connect, _ := rawConnectConn(t, w.Addr, echo, "")
		eventually(t, time.Second, "the held CONNECT is not in the live registry", func() bool { return w.Proxy.Tunnels() == 1 })
		if err := e.Switch("hole", false, nil); err != nil {
			t.Fatal(err)
		}
		if d, ended := held(connect, 1500*time.Millisecond); ended {
			t.Fatalf("on_existing: keep, yet the held CONNECT ended %v after the switch", d)
		}
	})
}
