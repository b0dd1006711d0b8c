package proxy_test

import (
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"testing/fstest"
	"time"

	"github.com/chaos-unicorn/unicorn/proxy"
	"github.com/chaos-unicorn/unicorn/rules"
)

// sniEngine is an engine whose only rules reset TLS by SNI, as a censor
// does, with the scenario on unless optional.
func sniEngine(t *testing.T, optional bool) *rules.Engine {
	t.Helper()
	opt := ""
	if optional {
		opt = "optional: true\n"
	}
	e := ruleEngine(t, "sni.yaml", `scenario: censor
`+opt+`rules:
  - {domains: [censored.example], action: tls_reset}
  - {domains: [alerted.example], action: tls_reset, mode: alert}
`, true)
	return e
}

// TestTunnelSNIResetByAddress: a CONNECT to a bare address, which no rule
// holds, is reset when its ClientHello names a host a tls_reset rule
// holds, and relayed when it names another.
func TestTunnelSNIResetByAddress(t *testing.T) {
	up := newUpstream(t, true)
	w := newWorld(t, worldConfig{Engine: sniEngine(t, false)})
	target := up.URLFor("127.0.0.1")

	_, err := w.client(5*time.Second, up.Roots(), "www.censored.example").Get(target)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("SNI www.censored.example: err = %v, want connection reset", err)
	}
	_, err = w.client(5*time.Second, up.Roots(), "alerted.example").Get(target)
	if err == nil || !strings.Contains(err.Error(), "remote error: tls: handshake failure") {
		t.Fatalf("SNI alerted.example: err = %v, want a handshake_failure alert", err)
	}
	if up.Hits() != 0 {
		t.Errorf("upstream got %d requests through reset tunnels", up.Hits())
	}
	resp, err := w.client(5*time.Second, up.Roots(), "example.com").Get(target)
	if err != nil {
		t.Fatalf("SNI example.com: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != Body {
		t.Fatalf("SNI example.com: got %q", b)
	}
	if recs := w.Logs.Find("proxy decision"); len(recs) != 2 {
		t.Errorf("%d decisions logged, want the two by SNI", len(recs))
	}
}

// TestSOCKSSNIResetByAddress: the same through a SOCKS request by address.
func TestSOCKSSNIResetByAddress(t *testing.T) {
	up := newUpstream(t, true)
	w := newSOCKSWorld(t, worldConfig{Engine: sniEngine(t, false)}, proxy.SOCKSConfig{})
	_, err := w.socksClient(5*time.Second, up.Roots(), "censored.example").Get(up.URLFor("127.0.0.1"))
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("err = %v, want connection reset", err)
	}
	if up.Hits() != 0 {
		t.Errorf("upstream got %d requests", up.Hits())
	}
}

// TestTunnelSNIServerFirst: while a tls_reset rule is on, a tunnel whose
// server speaks first (a banner) is not held up waiting for a ClientHello,
// and what the device then sends, not TLS, reaches the server.
func TestTunnelSNIServerFirst(t *testing.T) {
	srv := tcpServer(t, func(c net.Conn) {
		io.WriteString(c, "220 hello\n")
		b := make([]byte, 5)
		if _, err := io.ReadFull(c, b); err == nil {
			c.Write(b)
		}
	})
	w := newWorld(t, worldConfig{Engine: sniEngine(t, false)})
	c := tunnel(t, w.Addr, srv)
	c.SetDeadline(time.Now().Add(5 * time.Second))
	start := time.Now()
	b := make([]byte, 10)
	if _, err := io.ReadFull(c, b); err != nil || string(b) != "220 hello\n" {
		t.Fatalf("banner: %q, %v", b, err)
	}
	within(t, "banner", time.Since(start), 0, time.Second)
	io.WriteString(c, "QUIT\n")
	if _, err := io.ReadFull(c, b[:5]); err != nil || string(b[:5]) != "QUIT\n" {
		t.Fatalf("echo: %q, %v", b[:5], err)
	}
}

// TestTunnelSNISwitchedOn: a censor switched on reads the ClientHello of
// new tunnels by address; and a tunnel relayed by its SNI carries the
// SNI's question, so a tls_reset rule for that name switched on later cuts
// it within a second.
func TestTunnelSNISwitchedOn(t *testing.T) {
	up := newUpstream(t, true)
	set, err := rules.LoadFS(fstest.MapFS{
		"a.yaml": {Data: []byte("scenario: censor\noptional: true\nrules:\n  - {domains: [censored.example], action: tls_reset}\n")},
		"b.yaml": {Data: []byte("scenario: more\noptional: true\nrules:\n  - {domains: [example.com], action: tls_reset}\n")},
	}, "a.yaml", "b.yaml")
	if err != nil {
		t.Fatal(err)
	}
	e, err := rules.NewEngine(set, set.Defaults())
	if err != nil {
		t.Fatal(err)
	}
	w := newWorld(t, worldConfig{Engine: e})
	target := up.URLFor("127.0.0.1")
	get := func(c *http.Client) error {
		resp, err := c.Get(target)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		return resp.Body.Close()
	}
	insecure := w.client(5*time.Second, up.Roots(), "censored.example")
	insecure.Transport.(*http.Transport).TLSClientConfig.InsecureSkipVerify = true
	if err := get(insecure); err != nil {
		t.Fatalf("censor off: %v", err)
	}
	if err := e.Switch("censor", true, nil); err != nil {
		t.Fatal(err)
	}
	fresh := w.client(5*time.Second, up.Roots(), "censored.example")
	fresh.Transport.(*http.Transport).TLSClientConfig.InsecureSkipVerify = true
	if err := get(fresh); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("censor on: err = %v, want connection reset", err)
	}

	// A tunnel by address for example.com, relayed, stays open...
	kept := w.client(5*time.Second, up.Roots(), "example.com")
	if err := get(kept); err != nil {
		t.Fatal(err)
	}
	if n := w.Proxy.Tunnels(); n != 2 {
		t.Fatalf("%d tunnels open, want 2 (one per client)", n)
	}
	// ...until a rule resets example.com.
	start := time.Now()
	if err := e.Switch("more", true, nil); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Second, "the tunnel by SNI example.com is still open", func() bool {
		return len(w.Logs.Find("live tunnel: cut by a rule change")) == 1
	})
	within(t, "cut", time.Since(start), 0, time.Second)
}
