package proxy_test

import (
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chaos-unicorn/unicorn/rules"
)

// contentEngine is a rule set whose only rule matches HTTP content.
func contentEngine(t *testing.T, host string) *rules.Engine {
	t.Helper()
	e := ruleEngine(t, "content.yaml", `
scenario: content
rules:
  - {hosts: [`+host+`], methods: [POST], paths: ["/v3/*"], action: http_error, status: 429}
`, true)
	return e
}

// send sends method u with a small body through cl and returns the status
// and body.
func send(t *testing.T, cl *http.Client, method, u string) (*http.Response, string) {
	t.Helper()
	var body io.Reader
	if method == http.MethodPost {
		body = strings.NewReader(`{"x":1}`)
	}
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := cl.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: body: %v", method, u, err)
	}
	return resp, string(b)
}

func TestContentPlainHTTP(t *testing.T) {
	const host = "api.example.test"
	up := newUpstream(t, false)
	w := newWorld(t, worldConfig{
		Engine: contentEngine(t, host),
		Hosts:  map[string][]netip.Addr{host: {loopback}},
	})
	base := "http://" + host + ":" + strconv.Itoa(int(up.Port))
	cl := w.client(10*time.Second, nil, "")
	// GET first, so that the lean path owns the connection when the POST
	// comes: it must hand the POST back to be faulted.
	for i, c := range []struct {
		method, path string
		status       int
	}{
		{"GET", "/", 200},
		{"POST", "/v3/x", 429},
		{"GET", "/v3/x", 200},
		{"POST", "/v2/x", 200},
		{"POST", "/v3/y", 429},
	} {
		resp, body := send(t, cl, c.method, base+c.path)
		if resp.StatusCode != c.status {
			t.Fatalf("%d: %s %s: got %d %q, want %d", i, c.method, c.path, resp.StatusCode, body, c.status)
		}
		if c.status == 200 && body != Body {
			t.Errorf("%d: %s %s: body %q", i, c.method, c.path, body)
		}
		if c.status == 429 && resp.Header.Get(HeaderRuleName) == "" {
			t.Errorf("%d: %s %s: no rule header: %v", i, c.method, c.path, resp.Header)
		}
	}
	if n := up.hits.Load(); n != 3 {
		t.Errorf("upstream got %d requests, want 3", n)
	}
}

func TestContentConnect(t *testing.T) {
	tw := newTLSWorldWith(t, true, func(wc *worldConfig) { wc.Engine = contentEngine(t, faultedHost) })
	cl, dials := tw.client()
	u := strings.TrimSuffix(tw.url(faultedHost), "/")
	for i, c := range []struct {
		method, path string
		status       int
	}{
		{"POST", "/v3/x", 429},
		{"GET", "/", 200},
		{"POST", "/v2", 200},
		{"POST", "/v3/", 429},
	} {
		resp, body := send(t, cl, c.method, u+c.path)
		if resp.StatusCode != c.status {
			t.Fatalf("%d: %s %s: got %d %q, want %d", i, c.method, c.path, resp.StatusCode, body, c.status)
		}
		if iss := resp.TLS.PeerCertificates[0].Issuer.CommonName; iss != tw.ca.Cert.Subject.CommonName {
			t.Fatalf("%d: certificate issued by %q, want unicorn's CA", i, iss)
		}
	}
	if n := dials.Load(); n != 1 {
		t.Errorf("requests took %d connections, want 1", n)
	}
	if n := tw.rs.hits.Load(); n != 2 {
		t.Errorf("upstream got %d requests, want 2", n)
	}
	var sawContent bool
	for _, f := range tw.Rules.Flows() {
		if f.Host == faultedHost && f.Method == "POST" && f.Path == "/v3/x" && f.Header != nil {
			sawContent = true
		}
	}
	if !sawContent {
		t.Error("no decision was asked with the decrypted request's method, path and headers")
	}

	// A host without content rules stays a blind tunnel: the device sees
	// the upstream's own certificate.
	resp, body := get(t, cl, tw.url(siblingHost))
	if resp.StatusCode != 200 || !strings.Contains(body, "not json-rpc") {
		t.Fatalf("sibling: got %d %q", resp.StatusCode, body)
	}
	want, err := tw.upCA.Leaf(siblingHost)
	if err != nil {
		t.Fatal(err)
	}
	if !resp.TLS.PeerCertificates[0].Equal(want.Leaf) {
		t.Errorf("sibling certificate issued by %q, want the upstream's own", resp.TLS.PeerCertificates[0].Issuer.CommonName)
	}
}

// Without a CA, a host with content rules is tunnelled untouched.
func TestContentConnectNoCA(t *testing.T) {
	tw := newTLSWorldWith(t, false, func(wc *worldConfig) { wc.Engine = contentEngine(t, faultedHost) })
	cl, _ := tw.client()
	cl.Transport.(*http.Transport).TLSClientConfig.RootCAs = tw.roots
	resp, _ := send(t, cl, "POST", strings.TrimSuffix(tw.url(faultedHost), "/")+"/v3/x")
	if resp.StatusCode != 200 {
		t.Fatalf("got %d, want the upstream's 200", resp.StatusCode)
	}
	want, _ := tw.upCA.Leaf(faultedHost)
	if !resp.TLS.PeerCertificates[0].Equal(want.Leaf) {
		t.Error("tunnel was intercepted without a CA")
	}
}

// TestContentJSONRPC: a rule with jsonrpc: as a match field acts on the
// requests that call one of its methods, alone or in a batch, also on a
// keep-alive connection the lean path owns; other calls reach the upstream
// with their bodies intact.
func TestContentJSONRPC(t *testing.T) {
	const host = "rpc.example.test"
	e := ruleEngine(t, "rpc.yaml", `
scenario: rpc
rules:
  - {hosts: [`+host+`], jsonrpc: [eth_sendRawTransaction], action: http_error, status: 429}
`, true)
	var bodies []string
	var mu sync.Mutex
	up := newCounted(t, func(rw http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		bodies = append(bodies, string(b))
		mu.Unlock()
		io.WriteString(rw, Body)
	})
	w := newWorld(t, worldConfig{Engine: e, Hosts: map[string][]netip.Addr{host: {loopback}}})
	_, port, _ := net.SplitHostPort(up.Listener.Addr().String())
	u := "http://" + host + ":" + port + "/"
	cl, _ := oneConnClient(w)
	balance := `{"jsonrpc":"2.0","id":1,"method":"eth_getBalance","params":["0x0","latest"]}`
	for i, c := range []struct {
		body   string
		status int
	}{
		{"", 200}, // a GET: the lean path takes the connection
		{balance, 200},
		{`{"jsonrpc":"2.0","id":2,"method":"eth_sendRawTransaction","params":["0xf86c"]}`, 429},
		{`[` + balance + `,{"jsonrpc":"2.0","id":3,"method":"eth_sendRawTransaction"}]`, 429},
		{balance, 200},
	} {
		method, body := http.MethodGet, io.Reader(nil)
		if c.body != "" {
			method, body = http.MethodPost, strings.NewReader(c.body)
		}
		req, _ := http.NewRequest(method, u, body)
		resp, got := do(t, cl, req)
		if resp.StatusCode != c.status {
			t.Fatalf("%d: %s %s: got %d %q, want %d", i, method, c.body, resp.StatusCode, got, c.status)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(bodies) != 3 || bodies[1] != balance || bodies[2] != balance {
		t.Errorf("upstream got bodies %q; want the GET's and the two eth_getBalance calls, intact", bodies)
	}
}
