package proxy_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chaos-unicorn/unicorn/certs"
	"github.com/chaos-unicorn/unicorn/proxy"
	"github.com/chaos-unicorn/unicorn/proxy/proxytest"
	"github.com/chaos-unicorn/unicorn/rules"
)

// loopback is where every test name resolves and every fake listens.
var loopback = netip.MustParseAddr("127.0.0.1")

// testRule returns the rule the tests decide with.
func testRule(a rules.Action, ps rules.Params) *rules.Rule {
	return &rules.Rule{Scenario: "cud-2019", Index: 0, Pos: rules.Pos{File: "x.yaml", Line: 5}, Action: a, Params: ps}
}

// decision returns a Decision made by testRule(a, ps).
func decision(a rules.Action, ps rules.Params) rules.Decision {
	return rules.Decision{Action: a, Rule: testRule(a, ps)}
}

// testRef is how pages, headers and logs name testRule.
var testRef = testRule(rules.ActionReject, rules.Params{}).Ref()

// world is one proxy under test on 127.0.0.1:0 with its fakes.
type world struct {
	t     *testing.T
	Proxy *proxy.Proxy
	Addr  string   // the proxy's "127.0.0.1:port"
	URL   *url.URL // http://Addr
	Logs  *logRecorder
	Rules *recordingDecider
}

// worldConfig describes a world; zero fields take the proxy's defaults.
type worldConfig struct {
	// Decide is the rule set; nil allows everything.
	Decide func(rules.Flow) rules.Decision
	// Engine, if set, is the rule set instead of Decide, with NeedsContent.
	Engine *rules.Engine
	// Hosts are the names the fake DNS server knows.
	Hosts     map[string][]netip.Addr
	Clients   rules.ClientSet
	Blackhole time.Duration
	Info      func(netip.Addr) proxy.PageInfo
	// CA and UpstreamRoots turn on TLS interception.
	CA            *certs.CA
	UpstreamRoots *x509.CertPool
	// OnChange, if set, is the proxy's rule-change subscription.
	OnChange func(func()) func()
}

// newWorld starts a proxy described by wc; it is closed when t ends.
func newWorld(t *testing.T, wc worldConfig) *world {
	t.Helper()
	w := &world{t: t, Logs: &logRecorder{mu: new(sync.Mutex), recs: new([]logRec)}}
	w.Rules = &recordingDecider{fn: wc.Decide}
	var decider rules.Decider = w.Rules
	if wc.Engine != nil {
		w.Rules.fn = wc.Engine.Decide
		decider = contentDecider{w.Rules, wc.Engine}
	}
	cfg := proxy.Config{
		Decider:          decider,
		Resolver:         proxytest.NewResolver(t, wc.Hosts),
		Clients:          wc.Clients,
		BlackholeTimeout: wc.Blackhole,
		Logger:           slog.New(w.Logs),
		Info:             wc.Info,
		CA:               wc.CA,
		UpstreamRoots:    wc.UpstreamRoots,
		OnChange:         wc.OnChange,
	}
	p, err := proxy.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- p.Serve(l) }()
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	w.Proxy, w.Addr = p, l.Addr().String()
	w.URL = &url.URL{Scheme: "http", Host: w.Addr}
	return w
}

// client returns an http.Client that uses the proxy, trusts roots (may be
// nil) with TLS server name serverName (may be ""), and gives up after
// timeout (0: never).
func (w *world) client(timeout time.Duration, roots *x509.CertPool, serverName string) *http.Client {
	tr := &http.Transport{
		Proxy:           http.ProxyURL(w.URL),
		TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: serverName},
	}
	w.t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: timeout}
}

// get GETs u through the proxy and returns the response with its body read.
func (w *world) get(u string) (*http.Response, string) {
	w.t.Helper()
	resp, err := w.client(10*time.Second, nil, "").Get(u)
	if err != nil {
		w.t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		w.t.Fatalf("GET %s: body: %v", u, err)
	}
	return resp, string(b)
}

// recordingDecider decides with fn and remembers every flow it was asked about.
type recordingDecider struct {
	fn    func(rules.Flow) rules.Decision
	mu    sync.Mutex
	flows []rules.Flow
}

func (d *recordingDecider) Decide(f rules.Flow) rules.Decision {
	d.mu.Lock()
	d.flows = append(d.flows, f)
	d.mu.Unlock()
	if d.fn == nil {
		return rules.Decision{}
	}
	return d.fn(f)
}

// contentDecider records flows like recordingDecider and answers
// NeedsContent with an engine, as *rules.Engine does.
type contentDecider struct {
	*recordingDecider
	e *rules.Engine
}

func (d contentDecider) NeedsContent(f rules.Flow) bool { return d.e.NeedsContent(f) }

// Peek lets the live registry re-decide without counting hits.
func (d contentDecider) Peek(f rules.Flow) rules.Decision { return d.e.Peek(f) }

// DecidesBySNI lets the proxy read ClientHellos while a tls_reset rule is on.
func (d contentDecider) DecidesBySNI() bool { return d.e.DecidesBySNI() }

// OnChange subscribes the proxy to the engine's switches.
func (d contentDecider) OnChange(fn func()) func() { return d.e.OnChange(fn) }

// Flows returns the flows asked about so far.
func (d *recordingDecider) Flows() []rules.Flow {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]rules.Flow(nil), d.flows...)
}

// upstream is a fake origin server on 127.0.0.1:0.
type upstream struct {
	*httptest.Server
	Port  uint16
	hits  atomic.Int64
	mu    sync.Mutex
	hosts []string // Host headers seen
}

// Body is what every upstream answers.
const Body = "hello from upstream\n"

// newUpstream starts a plain (tls false) or TLS fake origin.
func newUpstream(t *testing.T, tlsOn bool) *upstream {
	u := &upstream{}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.hits.Add(1)
		u.mu.Lock()
		u.hosts = append(u.hosts, r.Host)
		u.mu.Unlock()
		io.WriteString(w, Body)
	})
	if tlsOn {
		u.Server = httptest.NewTLSServer(h)
	} else {
		u.Server = httptest.NewServer(h)
	}
	t.Cleanup(u.Close)
	u.Port = netip.MustParseAddrPort(u.Listener.Addr().String()).Port()
	return u
}

// Hits is how many requests the upstream served.
func (u *upstream) Hits() int64 { return u.hits.Load() }

// Hosts returns the Host headers the upstream saw.
func (u *upstream) Hosts() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.hosts...)
}

// Roots trusts the TLS upstream's certificate.
func (u *upstream) Roots() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(u.Certificate())
	return pool
}

// URLFor is the upstream's URL with host in place of its address.
func (u *upstream) URLFor(host string) string {
	scheme := "http"
	if u.TLS != nil {
		scheme = "https"
	}
	return fmt.Sprintf("%s://%s/hello", scheme, net.JoinHostPort(host, fmt.Sprint(u.Port)))
}

// logRec is one captured log record.
type logRec struct {
	msg   string
	attrs map[string]string
}

// logRecorder is a slog.Handler that keeps every record.
type logRecorder struct {
	mu    *sync.Mutex
	recs  *[]logRec
	attrs []slog.Attr
}

func (h *logRecorder) Enabled(context.Context, slog.Level) bool { return true }

func (h *logRecorder) Handle(_ context.Context, r slog.Record) error {
	rec := logRec{msg: r.Message, attrs: map[string]string{}}
	for _, a := range h.attrs {
		rec.attrs[a.Key] = a.Value.String()
	}
	r.Attrs(func(a slog.Attr) bool {
		rec.attrs[a.Key] = a.Value.String()
		return true
	})
	h.mu.Lock()
	*h.recs = append(*h.recs, rec)
	h.mu.Unlock()
	return nil
}

func (h *logRecorder) WithAttrs(as []slog.Attr) slog.Handler {
	c := *h
	c.attrs = append(append([]slog.Attr(nil), h.attrs...), as...)
	return &c
}

func (h *logRecorder) WithGroup(string) slog.Handler { return h }

// Find returns the records with message msg.
func (h *logRecorder) Find(msg string) []logRec {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []logRec
	for _, r := range *h.recs {
		if r.msg == msg {
			out = append(out, r)
		}
	}
	return out
}

// eventually polls cond every 10 ms for at most limit.
func eventually(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", limit, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// within fails t unless lo <= d <= hi.
func within(t *testing.T, what string, d, lo, hi time.Duration) {
	t.Helper()
	if d < lo || d > hi {
		t.Errorf("%s took %v, want between %v and %v", what, d, lo, hi)
	}
}

// tlsFor trusts the TLS upstream u.
func tlsFor(u *upstream) *tls.Config { return &tls.Config{RootCAs: u.Roots()} }

// discardLogger drops every record.
func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// ruleEngine loads src as the rule file name and returns an engine with
// its default scenarios on when defaults is set, or every scenario off
// (tests switch them on).
func ruleEngine(t testing.TB, name, src string, defaults bool) *rules.Engine {
	t.Helper()
	set, err := rules.Parse(name, []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	var active []string
	if defaults {
		active = set.Defaults()
	}
	e, err := rules.NewEngine(set, active)
	if err != nil {
		t.Fatal(err)
	}
	return e
}
