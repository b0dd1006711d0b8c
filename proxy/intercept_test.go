package proxy_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chaos-unicorn/unicorn/certs"
	"github.com/chaos-unicorn/unicorn/rules"
)

// Names of the interception tests: rules fire for faulted only.
const (
	faultedHost = "intercepted.test"
	siblingHost = "api.example.test"
)

// tlsWorld is a proxy with interception on, a TLS upstream whose
// certificates come from their own CA, and a device that trusts both.
type tlsWorld struct {
	*world
	ca, upCA *certs.CA
	up       *httptest.Server
	rs       *rpcServer
	roots    *x509.CertPool // what the device trusts
}

func newTLSWorld(t *testing.T, d rules.Decision, withCA bool) *tlsWorld {
	t.Helper()
	return newTLSWorldWith(t, withCA, func(wc *worldConfig) {
		wc.Decide = func(f rules.Flow) rules.Decision {
			if f.Host == faultedHost {
				return d
			}
			return rules.Decision{}
		}
	})
}

// newTLSWorldWith is newTLSWorld with the rules set by config.
func newTLSWorldWith(t *testing.T, withCA bool, config func(*worldConfig)) *tlsWorld {
	t.Helper()
	tw := &tlsWorld{rs: &rpcServer{}}
	var err error
	if tw.ca, err = certs.New(certs.Options{Host: "test"}); err != nil {
		t.Fatal(err)
	}
	if tw.upCA, err = certs.New(certs.Options{Host: "upstream"}); err != nil {
		t.Fatal(err)
	}
	tw.up = httptest.NewUnstartedServer(tw.rs)
	tw.up.TLS = &tls.Config{GetCertificate: tw.upCA.GetCertificate}
	tw.up.StartTLS()
	t.Cleanup(tw.up.Close)
	upRoots := x509.NewCertPool()
	upRoots.AddCert(tw.upCA.Cert)
	tw.roots = x509.NewCertPool()
	tw.roots.AddCert(tw.upCA.Cert)
	tw.roots.AddCert(tw.ca.Cert)
	wc := worldConfig{
		Hosts:         map[string][]netip.Addr{faultedHost: {loopback}, siblingHost: {loopback}},
		UpstreamRoots: upRoots,
	}
	config(&wc)
	if withCA {
		wc.CA = tw.ca
	}
	tw.world = newWorld(t, wc)
	return tw
}

// url is the upstream's URL under host.
func (tw *tlsWorld) url(host string) string {
	_, port, _ := net.SplitHostPort(tw.up.Listener.Addr().String())
	return "https://" + net.JoinHostPort(host, port) + "/"
}

// client is a device through the proxy that keeps one connection per
// host and counts the connections it opens to the proxy.
func (tw *tlsWorld) client() (*http.Client, *atomic.Int64) {
	var dials atomic.Int64
	d := &net.Dialer{}
	tr := &http.Transport{
		Proxy:           http.ProxyURL(tw.URL),
		TLSClientConfig: &tls.Config{RootCAs: tw.roots},
		MaxConnsPerHost: 1,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dials.Add(1)
			return d.DialContext(ctx, network, addr)
		},
	}
	tw.t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}, &dials
}

func TestInterceptHTTPError(t *testing.T) {
	d := decision(rules.ActionHTTPError, rules.Params{Status: 503, Headers: http.Header{"Retry-After": {"120"}}, Body: "down\n"})
	tw := newTLSWorld(t, d, true)
	cl, dials := tw.client()
	for i := range 5 { // keep-alive: all on one intercepted connection
		resp, body := get(t, cl, tw.url(faultedHost))
		if resp.StatusCode != 503 || body != "down\n" || resp.Header.Get("Retry-After") != "120" || resp.Header.Get(HeaderRuleName) != testRef {
			t.Fatalf("request %d: got %d %q %v", i, resp.StatusCode, body, resp.Header)
		}
		if iss := resp.TLS.PeerCertificates[0].Issuer.CommonName; iss != tw.ca.Cert.Subject.CommonName {
			t.Fatalf("intercepted certificate issued by %q", iss)
		}
	}
	if n := dials.Load(); n != 1 {
		t.Errorf("5 requests took %d connections, want 1", n)
	}
	if n := tw.rs.hits.Load(); n != 0 {
		t.Errorf("upstream got %d requests", n)
	}

	// The sibling host is tunnelled: the device sees the upstream's own
	// certificate.
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

func TestInterceptRPCError(t *testing.T) {
	tw := newTLSWorld(t, decision(rules.ActionRPCError, rpcParams), true)
	cl, dials := tw.client()
	// Forwarded calls reach the upstream over TLS checked against
	// UpstreamRoots with the CONNECT host as server name.
	testRPC(t, cl, tw.url(faultedHost), tw.rs)
	if n := dials.Load(); n != 1 {
		t.Errorf("requests took %d connections, want 1", n)
	}
}

func TestInterceptTLSFail(t *testing.T) {
	for _, c := range []struct {
		kind rules.TLSFailure
		want string
	}{
		{rules.TLSUntrusted, "certificate signed by unknown authority"},
		{rules.TLSSelfSigned, "certificate signed by unknown authority"},
		{rules.TLSWrongName, "certificate is valid for wrong.invalid, not " + faultedHost},
		{rules.TLSExpired, "certificate has expired"},
		{rules.TLSAlert, "handshake failure"},
	} {
		t.Run(c.kind.String(), func(t *testing.T) {
			tw := newTLSWorld(t, decision(rules.ActionTLSFail, rules.Params{TLSFailure: c.kind}), true)
			cl, _ := tw.client()
			_, err := cl.Get(tw.url(faultedHost))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want %q", err, c.want)
			}
			if n := tw.rs.hits.Load(); n != 0 {
				t.Errorf("upstream got %d requests", n)
			}
			// The sibling is untouched.
			if resp, _ := get(t, cl, tw.url(siblingHost)); resp.StatusCode != 200 {
				t.Errorf("sibling: %d", resp.StatusCode)
			}
		})
	}
}

// A device that accepts a bad certificate has its requests relayed, and
// the proxy warns about it.
func TestInterceptTLSFailAccepted(t *testing.T) {
	tw := newTLSWorld(t, decision(rules.ActionTLSFail, rules.Params{TLSFailure: rules.TLSUntrusted}), true)
	cl, _ := tw.client()
	cl.Transport.(*http.Transport).TLSClientConfig.InsecureSkipVerify = true
	resp, body := get(t, cl, tw.url(faultedHost))
	if resp.StatusCode != 200 || !strings.Contains(body, "not json-rpc") {
		t.Fatalf("got %d %q", resp.StatusCode, body)
	}
	eventually(t, time.Second, "warning logged", func() bool {
		return len(tw.Logs.Find("tls_fail: client ACCEPTED a bad certificate; relaying its requests")) == 1
	})
}

func TestInterceptWithoutCA(t *testing.T) {
	for _, d := range []rules.Decision{
		decision(rules.ActionHTTPError, rules.Params{Status: 503}),
		decision(rules.ActionRPCError, rpcParams),
		decision(rules.ActionTLSFail, rules.Params{TLSFailure: rules.TLSAlert}),
	} {
		t.Run(d.Action.String(), func(t *testing.T) {
			tw := newTLSWorld(t, d, false)
			for i := range 2 {
				cl, _ := tw.client() // a fresh connection each time
				resp, body := post(t, cl, tw.url(faultedHost), `{"jsonrpc":"2.0","id":1,"method":"eth_call"}`)
				if resp.StatusCode != 200 || !strings.Contains(body, "ok-eth_call") {
					t.Fatalf("request %d: got %d %q", i, resp.StatusCode, body)
				}
				want, _ := tw.upCA.Leaf(faultedHost)
				if !resp.TLS.PeerCertificates[0].Equal(want.Leaf) {
					t.Fatalf("certificate is not the upstream's")
				}
			}
			if n := len(tw.Logs.Find("a rule needs TLS interception but no CA is configured: tunnelling untouched (run `unicorn ca init`)")); n != 1 {
				t.Errorf("%d warnings, want 1", n)
			}
		})
	}
}

// Close ends intercepted connections, idle or busy, and returns.
func TestInterceptClose(t *testing.T) {
	tw := newTLSWorld(t, decision(rules.ActionHTTPError, rules.Params{Status: 503}), true)
	cl, _ := tw.client()
	get(t, cl, tw.url(faultedHost)) // leaves an idle intercepted connection
	// A handshake that never finishes: CONNECT, then silence.
	conn, br := rawConnectConn(t, tw.Addr, faultedHost+":443", "")
	if resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect}); err != nil || resp.StatusCode != 200 {
		t.Fatalf("CONNECT: %v %v", resp, err)
	}
	defer conn.Close()
	done := make(chan error, 1)
	go func() { done <- tw.Proxy.Close() }()
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		t.Fatal("Close did not return")
	}
	if _, err := cl.Get(tw.url(faultedHost)); err == nil {
		t.Error("request after Close succeeded")
	}
}
