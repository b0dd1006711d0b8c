package testbed_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chaos-unicorn/unicorn/rules"
	"github.com/chaos-unicorn/unicorn/testbed"
	"github.com/miekg/dns"
)

func TestMain(m *testing.M) { os.Exit(testbed.Main(m)) }

// dnsTimeout bounds every DNS exchange of the tests.
const dnsTimeout = 3 * time.Second

// ask sends one question for name to server over network ("udp" or
// "tcp"), with EDNS0 so that blocked answers carry an Extended DNS Error,
// and returns the reply. It fails t if no reply comes within dnsTimeout.
func ask(t *testing.T, server, network, name string, qtype uint16) *dns.Msg {
	t.Helper()
	r, err := exchange(server, network, name, qtype, dnsTimeout)
	if err != nil {
		t.Fatalf("dig @%s +%s %s %s: %v", server, network, name, dns.TypeToString[qtype], err)
	}
	return r
}

func exchange(server, network, name string, qtype uint16, timeout time.Duration) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	m.SetEdns0(1232, false)
	c := &dns.Client{Net: network, Timeout: timeout}
	r, _, err := c.Exchange(m, server)
	return r, err
}

// ede returns the reply's Extended DNS Error, or nil.
func ede(m *dns.Msg) *dns.EDNS0_EDE {
	if opt := m.IsEdns0(); opt != nil {
		for _, o := range opt.Option {
			if e, ok := o.(*dns.EDNS0_EDE); ok {
				return e
			}
		}
	}
	return nil
}

// hasSOA reports whether the reply's authority section holds an SOA.
func hasSOA(m *dns.Msg) bool {
	for _, rr := range m.Ns {
		if _, ok := rr.(*dns.SOA); ok {
			return true
		}
	}
	return false
}

// answerAddrs returns the A and AAAA addresses of a reply, as text.
func answerAddrs(m *dns.Msg) []string {
	var out []string
	for _, rr := range m.Answer {
		switch rr := rr.(type) {
		case *dns.A:
			out = append(out, rr.A.String())
		case *dns.AAAA:
			out = append(out, rr.AAAA.String())
		}
	}
	return out
}

// proxyClient is an http.Client that goes through unicorn's proxy, trusts
// the testbed CA only, opens a new connection per request (so that no
// retry on a reused connection blurs a timing) and remembers the response
// to its last CONNECT.
type proxyClient struct {
	*http.Client
	mu      sync.Mutex
	connect *http.Response // the last CONNECT response, body unread
}

func newProxyClient(u *testbed.Unicorn) *proxyClient {
	c := &proxyClient{}
	c.Client = &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			Proxy:             http.ProxyURL(u.ProxyURL),
			TLSClientConfig:   testbed.TestCA().ClientConfig(),
			DisableKeepAlives: true,
			OnProxyConnectResponse: func(_ context.Context, _ *url.URL, _ *http.Request, resp *http.Response) error {
				c.mu.Lock()
				c.connect = resp
				c.mu.Unlock()
				return nil
			},
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return c
}

// lastConnect returns the status and headers of the CONNECT response of
// the last request, or 0 and nil if it had none.
func (c *proxyClient) lastConnect() (int, http.Header) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.connect == nil {
		return 0, nil
	}
	return c.connect.StatusCode, c.connect.Header
}

// fetched is the outcome of one request.
type fetched struct {
	resp    *http.Response // nil on error
	body    string
	err     error
	elapsed time.Duration
}

// get fetches rawURL with c and reads the whole body.
func (c *proxyClient) get(rawURL string) fetched {
	return c.do(mustRequest(http.MethodGet, rawURL, ""))
}

func (c *proxyClient) do(req *http.Request) fetched {
	c.mu.Lock()
	c.connect = nil // lastConnect speaks of this request only
	c.mu.Unlock()
	start := time.Now()
	resp, err := c.Do(req)
	f := fetched{resp: resp, err: err}
	if err == nil {
		b, rerr := io.ReadAll(resp.Body)
		resp.Body.Close()
		f.body, f.err = string(b), rerr
	}
	f.elapsed = time.Since(start)
	return f
}

func mustRequest(method, rawURL, body string) *http.Request {
	req, err := http.NewRequest(method, rawURL, strings.NewReader(body))
	if err != nil {
		panic(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	return req
}

// port returns the port of a "host:port".
func port(t *testing.T, hostport string) string {
	t.Helper()
	_, p, err := net.SplitHostPort(hostport)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// builtinRef returns the reference (as logs, pages, headers and EDE name
// it) of the rule of the built-in default scenario that decides service.
func builtinRef(t *testing.T, service string) string {
	t.Helper()
	set, err := rules.Builtin()
	if err != nil {
		t.Fatal(err)
	}
	sc := set.Scenario(rules.BuiltinDefault)
	if sc == nil {
		t.Fatalf("no built-in scenario %s", rules.BuiltinDefault)
	}
	for _, r := range sc.Rules {
		if r.Service == service {
			return r.Ref()
		}
	}
	t.Fatalf("built-in %s has no rule for service %s", rules.BuiltinDefault, service)
	return ""
}

// fileRefs returns the references of the rules of the one scenario in
// file, in order.
func fileRefs(t *testing.T, file string) []string {
	t.Helper()
	set, err := rules.Load(file)
	if err != nil {
		t.Fatalf("loading %s: %v", file, err)
	}
	if len(set.Scenarios) != 1 {
		t.Fatalf("%s: want one scenario, got %d", file, len(set.Scenarios))
	}
	var refs []string
	for _, r := range set.Scenarios[0].Rules {
		refs = append(refs, r.Ref())
	}
	return refs
}

// writeFile writes content to name in a fresh temporary directory.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// needLoopbackAddrs skips t where the loopback interface does not answer
// for every address of 127.0.0.0/8 (macOS answers only 127.0.0.1).
func needLoopbackAddrs(t *testing.T, ips ...string) {
	t.Helper()
	for _, ip := range ips {
		l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
		if err != nil {
			t.Skipf("cannot listen on %s (%v): this system's loopback has only 127.0.0.1", ip, err)
		}
		l.Close()
	}
}
