package dnsblock

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chaos-unicorn/unicorn/rules"
	"github.com/miekg/dns"
)

// testRule is the rule the test deciders block with; its Ref is testRef.
func testRule(a rules.Action, p rules.Params) *rules.Rule {
	if p.TTL == 0 {
		p.TTL = rules.DefaultBlockTTL // what the loader does
	}
	return &rules.Rule{
		Scenario: "cud-2019", Index: 1, Pos: rules.Pos{File: "x.yaml", Line: 7},
		Service: "infura", Action: a, Params: p,
	}
}

// testRef is what blocked answers must name: whatever rules/ says the
// reference of testRule is.
var testRef = testRule(rules.ActionReject, rules.Params{}).Ref()

// blocker decides with rule for names under infura.io and allows the rest.
// It counts its calls.
type blocker struct {
	rule  *rules.Rule
	calls atomic.Int64
}

func (b *blocker) Decide(f rules.Flow) rules.Decision {
	b.calls.Add(1)
	if f.Layer != rules.LayerDNS {
		panic("dnsblock asked at layer " + f.Layer.String())
	}
	h := strings.TrimSuffix(strings.ToLower(f.Host), ".")
	if b.rule != nil && (h == "infura.io" || strings.HasSuffix(h, ".infura.io")) {
		return rules.Decision{Action: b.rule.Action, Rule: b.rule}
	}
	return rules.Decision{}
}

// testClock is an injectable clock that moves only when told.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func newTestClock() *testClock { return &testClock{t: time.Date(2019, 4, 1, 9, 0, 0, 0, time.UTC)} }

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// logBuffer is a goroutine-safe log sink.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// count returns how many log lines contain s.
func (l *logBuffer) count(s string) int {
	n := 0
	for _, line := range strings.Split(l.String(), "\n") {
		if strings.Contains(line, s) {
			n++
		}
	}
	return n
}

// newTestLogger logs everything, from Debug up, as text to l.
func newTestLogger(l *logBuffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// world is one unicorn DNS server on loopback, as the tests see it.
type world struct {
	// srv is the server under test.
	srv *Server
	// udp and tcp are where it listens, "127.0.0.1:port".
	udp, tcp string
	// logs holds everything it logged, at Debug and above.
	logs *logBuffer
	// clock is the cache's clock.
	clock *testClock
	// served is closed when Serve has returned; err is what it returned.
	served chan struct{}
	err    error
}

// newWorld starts a server with cfg on 127.0.0.1:0 (UDP and TCP), filling
// Logger and Now when unset. The listeners exist before Serve runs, so
// the server is ready as soon as newWorld returns. Cleanup shuts it down
// and checks that Serve returned nil.
func newWorld(t testing.TB, cfg Config) *world {
	t.Helper()
	return newWorldWith(t, cfg, nil)
}

// newWorldWith is newWorld, with tweak (if not nil) applied to the server
// before it serves.
func newWorldWith(t testing.TB, cfg Config, tweak func(*Server)) *world {
	t.Helper()
	w := &world{logs: &logBuffer{}, clock: newTestClock(), served: make(chan struct{})}
	if cfg.Logger == nil {
		cfg.Logger = newTestLogger(w.logs)
	}
	if cfg.Now == nil {
		cfg.Now = w.clock.Now
	}
	srv, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if tweak != nil {
		tweak(srv)
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		pc.Close()
		t.Fatal(err)
	}
	w.srv, w.udp, w.tcp = srv, pc.LocalAddr().String(), l.Addr().String()
	go func() {
		w.err = srv.Serve(context.Background(), pc, l)
		close(w.served)
	}()
	t.Cleanup(func() {
		w.stop(t)
	})
	return w
}

// stop shuts the server down and waits, bounded, for Serve to return nil.
func (w *world) stop(t testing.TB) {
	t.Helper()
	if err := w.srv.Shutdown(); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	select {
	case <-w.served:
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after Shutdown")
	}
	if w.err != nil {
		t.Errorf("Serve: %v", w.err)
	}
}

// query builds a question; edns adds an OPT record of 1232 bytes.
func query(name string, qtype uint16, edns bool) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	if edns {
		m.SetEdns0(1232, false)
	}
	return m
}

// ask sends m to the world over network ("udp" or "tcp").
func (w *world) ask(t testing.TB, network string, m *dns.Msg) *dns.Msg {
	t.Helper()
	r, err := w.exchange(network, m, 3*time.Second)
	if err != nil {
		t.Fatalf("%s %s: %v", network, m.Question[0].Name, err)
	}
	if r.Id != m.Id {
		t.Fatalf("reply ID %d, want the query's %d", r.Id, m.Id)
	}
	if len(r.Question) != 1 || r.Question[0] != m.Question[0] {
		t.Fatalf("reply question %v, want %v as asked", r.Question, m.Question)
	}
	return r
}

func (w *world) exchange(network string, m *dns.Msg, timeout time.Duration) (*dns.Msg, error) {
	addr := w.udp
	if network == "tcp" {
		addr = w.tcp
	}
	c := &dns.Client{Net: network, Timeout: timeout}
	r, _, err := c.Exchange(m, addr)
	return r, err
}

// ede returns the reply's Extended DNS Error, or nil.
func ede(r *dns.Msg) *dns.EDNS0_EDE {
	opt := r.IsEdns0()
	if opt == nil {
		return nil
	}
	for _, o := range opt.Option {
		if e, ok := o.(*dns.EDNS0_EDE); ok {
			return e
		}
	}
	return nil
}

// fakeWriter is a dns.ResponseWriter that keeps what was written, for
// handler tests and benchmarks without sockets.
type fakeWriter struct {
	remote net.Addr
	last   []byte
	writes int
}

func newFakeWriter(tcp bool) *fakeWriter {
	if tcp {
		return &fakeWriter{remote: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5353}}
	}
	return &fakeWriter{remote: &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5353}}
}

func (f *fakeWriter) LocalAddr() net.Addr  { return &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 53} }
func (f *fakeWriter) RemoteAddr() net.Addr { return f.remote }
func (f *fakeWriter) WriteMsg(m *dns.Msg) error {
	b, err := m.Pack()
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	return err
}
func (f *fakeWriter) Write(b []byte) (int, error) {
	f.last = append(f.last[:0], b...)
	f.writes++
	return len(b), nil
}
func (f *fakeWriter) Close() error        { return nil }
func (f *fakeWriter) TsigStatus() error   { return nil }
func (f *fakeWriter) TsigTimersOnly(bool) {}
func (f *fakeWriter) Hijack()             {}

// msg unpacks the last reply.
func (f *fakeWriter) msg(t testing.TB) *dns.Msg {
	t.Helper()
	if f.writes == 0 {
		t.Fatal("nothing written")
	}
	m := new(dns.Msg)
	if err := m.Unpack(f.last); err != nil {
		t.Fatalf("reply does not unpack: %v", err)
	}
	return m
}
