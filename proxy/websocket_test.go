package proxy_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chaos-unicorn/unicorn/rules"
	"github.com/coder/websocket"
)

// wsUpstream is a WebSocket origin: it answers each JSON-RPC call (or
// batch) in a text message with ok-<method> results, echoes every other
// message, and records the messages it received.
type wsUpstream struct {
	mu   sync.Mutex
	msgs []string
}

func (u *wsUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	defer c.CloseNow()
	c.SetReadLimit(1 << 20)
	for {
		typ, b, err := c.Read(r.Context())
		if err != nil {
			return
		}
		u.mu.Lock()
		u.msgs = append(u.msgs, string(b))
		u.mu.Unlock()
		reply := b
		if typ == websocket.MessageText {
			if a := rpcAnswer(b); a != nil {
				reply = a
			}
		}
		if err := c.Write(r.Context(), typ, reply); err != nil {
			return
		}
	}
}

func (u *wsUpstream) Msgs() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Clone(u.msgs)
}

// rpcAnswer answers the JSON-RPC call or batch b, or returns nil.
func rpcAnswer(b []byte) []byte {
	type call struct {
		Method string          `json:"method"`
		ID     json.RawMessage `json:"id"`
	}
	answer := func(c call) map[string]any {
		return map[string]any{"jsonrpc": "2.0", "id": c.ID, "result": "ok-" + c.Method}
	}
	var one call
	if json.Unmarshal(b, &one) == nil && one.Method != "" {
		out, _ := json.Marshal(answer(one))
		return out
	}
	var batch []call
	if json.Unmarshal(b, &batch) == nil {
		out := []map[string]any{}
		for _, c := range batch {
			if len(c.ID) > 0 {
				answer := answer(c)
				out = append(out, answer)
			}
		}
		b, _ := json.Marshal(out)
		return b
	}
	return nil
}

// wsClient is a WebSocket client through the proxy with a reader running.
type wsClient struct {
	c    *websocket.Conn
	in   chan string
	resp *http.Response
}

func dialWS(t *testing.T, proxyURL *url.URL, u string, roots *x509.CertPool) *wsClient {
	t.Helper()
	tr := &http.Transport{Proxy: http.ProxyURL(proxyURL), TLSClientConfig: &tls.Config{RootCAs: roots}}
	t.Cleanup(tr.CloseIdleConnections)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, u, &websocket.DialOptions{HTTPClient: &http.Client{Transport: tr}})
	if err != nil {
		t.Fatalf("dial %s: %v", u, err)
	}
	t.Cleanup(func() { c.CloseNow() })
	c.SetReadLimit(1 << 20)
	wc := &wsClient{c: c, in: make(chan string, 64), resp: resp}
	go func() {
		defer close(wc.in)
		for {
			_, b, err := c.Read(context.Background())
			if err != nil {
				return
			}
			wc.in <- string(b)
		}
	}()
	return wc
}

func (wc *wsClient) send(t *testing.T, typ websocket.MessageType, msg string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := wc.c.Write(ctx, typ, []byte(msg)); err != nil {
		t.Fatalf("write %d bytes: %v", len(msg), err)
	}
}

func (wc *wsClient) recv(t *testing.T) string {
	t.Helper()
	select {
	case m, ok := <-wc.in:
		if !ok {
			t.Fatal("connection closed")
		}
		return m
	case <-time.After(5 * time.Second):
		t.Fatal("no message")
	}
	return ""
}

// checkEcho checks echo of text and binary messages and a ping.
func checkEcho(t *testing.T, wc *wsClient) {
	t.Helper()
	wc.send(t, websocket.MessageText, "hello")
	if got := wc.recv(t); got != "hello" {
		t.Fatalf("echo: %q", got)
	}
	big := strings.Repeat("0123456789", 10000) // 100 kB: 64-bit length
	wc.send(t, websocket.MessageBinary, big)
	if got := wc.recv(t); got != big {
		t.Fatalf("binary echo: %d bytes", len(got))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := wc.c.Ping(ctx); err != nil {
		t.Fatalf("ping: %v", err)
	}
}

var wsRPCParams = rules.Params{RPCCode: -32005, RPCMessage: "limit exceeded", RPCMethods: []string{"eth_sendRawTransaction"}}

// checkRPC checks an rpc_error rule for eth_sendRawTransaction over wc.
func checkRPC(t *testing.T, wc *wsClient, up *wsUpstream) {
	t.Helper()
	wc.send(t, websocket.MessageText, `{"jsonrpc":"2.0","id":1,"method":"eth_getBalance","params":["0xab","latest"]}`)
	if got := wc.recv(t); got != `{"id":1,"jsonrpc":"2.0","result":"ok-eth_getBalance"}` {
		t.Errorf("eth_getBalance: %s", got)
	}
	wc.send(t, websocket.MessageText, `{"jsonrpc":"2.0","id":"tx-7","method":"eth_sendRawTransaction","params":["0x02"]}`)
	if got := wc.recv(t); got != `{"jsonrpc":"2.0","id":"tx-7","error":{"code":-32005,"message":"limit exceeded"}}` {
		t.Errorf("eth_sendRawTransaction: %s", got)
	}
	// A faulted notification gets nothing.
	wc.send(t, websocket.MessageText, `{"jsonrpc":"2.0","method":"eth_sendRawTransaction"}`)
	wc.send(t, websocket.MessageText, `[{"jsonrpc":"2.0","id":2,"method":"eth_sendRawTransaction"},{"jsonrpc":"2.0","id":3,"method":"eth_blockNumber"}]`)
	got := []string{wc.recv(t), wc.recv(t)}
	slices.Sort(got)
	want := []string{
		`[{"id":3,"jsonrpc":"2.0","result":"ok-eth_blockNumber"}]`,
		`[{"jsonrpc":"2.0","id":2,"error":{"code":-32005,"message":"limit exceeded"}}]`,
	}
	if !slices.Equal(got, want) {
		t.Errorf("batch: got %q, want %q", got, want)
	}
	// Other frames pass.
	wc.send(t, websocket.MessageText, "not json")
	if got := wc.recv(t); got != "not json" {
		t.Errorf("text: %q", got)
	}
	msgs := up.Msgs()
	for _, m := range msgs {
		if strings.Contains(m, "eth_sendRawTransaction") {
			t.Errorf("upstream saw %s", m)
		}
	}
	wantUp := []string{
		`{"jsonrpc":"2.0","id":1,"method":"eth_getBalance","params":["0xab","latest"]}`,
		`[{"jsonrpc":"2.0","id":3,"method":"eth_blockNumber"}]`,
		"not json",
	}
	if !slices.Equal(msgs[len(msgs)-3:], wantUp) {
		t.Errorf("upstream got %q, want %q at the end", msgs, wantUp)
	}

	// A fragmented message is not inspected: it passes as it came.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	mw, err := wc.c.Writer(ctx, websocket.MessageText)
	if err != nil {
		t.Fatal(err)
	}
	for _, part := range []string{`{"jsonrpc":"2.0","id":9,`, `"method":"eth_sendRawTransaction"}`} {
		if _, err := mw.Write([]byte(part)); err != nil {
			t.Fatal(err)
		}
	}
	if err := mw.Close(); err != nil {
		t.Fatal(err)
	}
	if got := wc.recv(t); got != `{"id":9,"jsonrpc":"2.0","result":"ok-eth_sendRawTransaction"}` {
		t.Errorf("fragmented: %s", got)
	}
}

// Close ends open WebSocket relays, plain and intercepted, and returns.
func TestWebSocketClose(t *testing.T) {
	tw := newTLSWorld(t, decision(rules.ActionRPCError, wsRPCParams), true)
	_, tport := newWSUpstream(t, tw)
	_, pport := newWSUpstream(t, nil)
	conns := []*wsClient{
		dialWS(t, tw.URL, "wss://"+net.JoinHostPort(faultedHost, tport)+"/", tw.roots),
		dialWS(t, tw.URL, "ws://"+net.JoinHostPort(siblingHost, pport)+"/", nil),
	}
	for _, wc := range conns {
		wc.send(t, websocket.MessageText, "hi")
		if got := wc.recv(t); got != "hi" {
			t.Fatalf("echo: %q", got)
		}
	}
	done := make(chan error, 1)
	go func() { done <- tw.Proxy.Close() }()
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		t.Fatal("Close did not return")
	}
	for i, wc := range conns {
		select {
		case _, ok := <-wc.in:
			if ok {
				t.Errorf("conn %d: message after Close", i)
			}
		case <-time.After(3 * time.Second):
			t.Errorf("conn %d still open after Close", i)
		}
	}
}

// newWSUpstream starts a WebSocket origin, over TLS with a leaf from tw's
// upstream CA when tw is not nil, and returns its port.
func newWSUpstream(t *testing.T, tw *tlsWorld) (*wsUpstream, string) {
	t.Helper()
	ws := &wsUpstream{}
	srv := httptest.NewUnstartedServer(ws)
	if tw != nil {
		srv.TLS = &tls.Config{GetCertificate: tw.upCA.GetCertificate}
		srv.StartTLS()
	} else {
		srv.Start()
	}
	t.Cleanup(srv.Close)
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	return ws, port
}

func TestWebSocketIntercepted(t *testing.T) {
	for _, c := range []struct {
		name string
		rpc  bool
	}{{"content rule", false}, {"rpc_error", true}} {
		t.Run(c.name, func(t *testing.T) {
			tw := newTLSWorldWith(t, true, func(wc *worldConfig) {
				if c.rpc {
					wc.Decide = func(f rules.Flow) rules.Decision {
						if f.Host == faultedHost {
							return decision(rules.ActionRPCError, wsRPCParams)
						}
						return rules.Decision{}
					}
				} else {
					wc.Engine = contentEngine(t, faultedHost)
				}
			})
			up, port := newWSUpstream(t, tw)
			wc := dialWS(t, tw.URL, "wss://"+net.JoinHostPort(faultedHost, port)+"/ws", tw.roots)
			if wc.resp.TLS == nil || wc.resp.TLS.PeerCertificates[0].Issuer.CommonName != tw.ca.Cert.Subject.CommonName {
				t.Fatalf("not intercepted: %+v", wc.resp.TLS)
			}
			checkEcho(t, wc)
			if c.rpc {
				checkRPC(t, wc, up)
			}
		})
	}
}

func TestWebSocketPlain(t *testing.T) {
	const host = "ws.example.test"
	for _, c := range []struct {
		name string
		rpc  bool
	}{{"allow", false}, {"rpc_error", true}} {
		t.Run(c.name, func(t *testing.T) {
			w := newWorld(t, worldConfig{
				Hosts: map[string][]netip.Addr{host: {loopback}},
				Decide: func(rules.Flow) rules.Decision {
					if c.rpc {
						return decision(rules.ActionRPCError, wsRPCParams)
					}
					return rules.Decision{}
				},
			})
			up, port := newWSUpstream(t, nil)
			wc := dialWS(t, w.URL, "ws://"+net.JoinHostPort(host, port)+"/ws", nil)
			checkEcho(t, wc)
			if c.rpc {
				checkRPC(t, wc, up)
			}
		})
	}
}

// A rule that refuses the upgrade answers it like any request.
func TestWebSocketRejected(t *testing.T) {
	tw := newTLSWorld(t, decision(rules.ActionHTTPError, rules.Params{Status: 503, Body: "down"}), true)
	_, port := newWSUpstream(t, tw)
	tr := &http.Transport{Proxy: http.ProxyURL(tw.URL), TLSClientConfig: &tls.Config{RootCAs: tw.roots}}
	t.Cleanup(tr.CloseIdleConnections)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, resp, err := websocket.Dial(ctx, "wss://"+net.JoinHostPort(faultedHost, port)+"/ws", &websocket.DialOptions{HTTPClient: &http.Client{Transport: tr}})
	if err == nil || resp == nil || resp.StatusCode != 503 {
		t.Fatalf("got %v %v, want 503", resp, err)
	}
}

// A client that offers h2 on an intercepted connection gets HTTP/2, the
// injected faults, and its other requests forwarded, all on one
// connection.
func TestInterceptHTTP2(t *testing.T) {
	tw := newTLSWorld(t, decision(rules.ActionRPCError, rpcParams), true)
	cl, dials := tw.client()
	cl.Transport.(*http.Transport).ForceAttemptHTTP2 = true
	resp, body := post(t, cl, tw.url(faultedHost), `{"jsonrpc":"2.0","id":7,"method":"eth_call"}`)
	if resp.ProtoMajor != 2 || !strings.Contains(body, `"code":-32000`) {
		t.Fatalf("got %s %d %q", resp.Proto, resp.StatusCode, body)
	}
	testRPC(t, cl, tw.url(faultedHost), tw.rs)
	if n := dials.Load(); n != 1 {
		t.Errorf("requests took %d connections, want 1", n)
	}

	hw := newTLSWorld(t, decision(rules.ActionHTTPError, rules.Params{Status: 503, Body: "down\n"}), true)
	hcl, _ := hw.client()
	hcl.Transport.(*http.Transport).ForceAttemptHTTP2 = true
	resp, body = get(t, hcl, hw.url(faultedHost))
	if resp.ProtoMajor != 2 || resp.StatusCode != 503 || body != "down\n" || resp.Header.Get(HeaderRuleName) != testRef {
		t.Fatalf("http_error: got %s %d %q %v", resp.Proto, resp.StatusCode, body, resp.Header)
	}
}
