package proxy_test

import (
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/chaos-unicorn/unicorn/proxy"
	"github.com/chaos-unicorn/unicorn/rules"
)

var testHosts = map[string][]netip.Addr{"api.example.test": {loopback}}

func TestPlainAllowed(t *testing.T) {
	up := newUpstream(t, false)
	w := newWorld(t, worldConfig{Hosts: testHosts})

	t.Run("literal", func(t *testing.T) {
		resp, body := w.get(up.URLFor("127.0.0.1"))
		if resp.StatusCode != 200 || body != Body {
			t.Fatalf("got %d %q", resp.StatusCode, body)
		}
	})
	t.Run("name", func(t *testing.T) {
		n := len(w.Rules.Flows())
		resp, body := w.get(up.URLFor("api.example.test"))
		if resp.StatusCode != 200 || body != Body {
			t.Fatalf("got %d %q", resp.StatusCode, body)
		}
		want := []rules.Flow{
			{Client: loopback, Layer: rules.LayerHTTP, Host: "api.example.test", Port: up.Port, Proto: rules.ProtoTCP},
			{Client: loopback, Layer: rules.LayerTCP, Host: "api.example.test", Addr: loopback, Port: up.Port, Proto: rules.ProtoTCP},
		}
		if got := w.Rules.Flows()[n:]; fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("flows %v, want %v", got, want)
		}
		hosts := up.Hosts()
		if h := hosts[len(hosts)-1]; h != fmt.Sprintf("api.example.test:%d", up.Port) {
			t.Errorf("upstream saw Host %q", h)
		}
	})
	if got := w.Logs.Find("proxy decision"); len(got) != 0 {
		t.Errorf("plain allows were logged: %v", got)
	}
}

func TestPlainRejected(t *testing.T) {
	up := newUpstream(t, false)
	w := newWorld(t, worldConfig{Hosts: testHosts, Decide: func(f rules.Flow) rules.Decision {
		if f.Host == "api.example.test" {
			return decision(rules.ActionReject, rules.Params{})
		}
		return rules.Decision{}
	}})
	resp, body := w.get(up.URLFor("api.example.test"))
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if !strings.Contains(body, testRef) || !strings.Contains(body, "cud-2019") {
		t.Errorf("body does not name the rule: %q", body)
	}
	for h, v := range map[string]string{"X-Unicorn-Rule": testRef, "X-Unicorn-Scenario": "cud-2019", "X-Unicorn-Action": "reject"} {
		if got := resp.Header.Get(h); got != v {
			t.Errorf("%s = %q, want %q", h, got, v)
		}
	}
	if up.Hits() != 0 {
		t.Errorf("upstream got %d requests", up.Hits())
	}
	logs := w.Logs.Find("proxy decision")
	if len(logs) != 1 {
		t.Fatalf("decision logs: %v", logs)
	}
	for k, v := range map[string]string{"component": "proxy", "client": "127.0.0.1", "layer": "http",
		"target": fmt.Sprintf("api.example.test:%d", up.Port), "action": "reject", "scenario": "cud-2019", "rule_pos": "x.yaml:5"} {
		if logs[0].attrs[k] != v {
			t.Errorf("log %s = %q, want %q", k, logs[0].attrs[k], v)
		}
	}
}

func TestPlainSinkhole(t *testing.T) {
	up := newUpstream(t, false)
	w := newWorld(t, worldConfig{Hosts: testHosts, Decide: func(f rules.Flow) rules.Decision {
		return decision(rules.ActionSinkhole, rules.Params{})
	}})
	resp, body := w.get(up.URLFor("api.example.test"))
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(body, "unicorn sinkholed api.example.test") {
		t.Fatalf("got %d %q", resp.StatusCode, body)
	}
	if resp.Header.Get("X-Unicorn-Action") != "sinkhole" || up.Hits() != 0 {
		t.Errorf("action header %q, upstream hits %d", resp.Header.Get("X-Unicorn-Action"), up.Hits())
	}
}

func TestSpoof(t *testing.T) {
	plain, tlsUp := newUpstream(t, false), newUpstream(t, true)
	// The fake DNS does not know the name: only the spoof rule can send it
	// anywhere.
	w := newWorld(t, worldConfig{Decide: func(f rules.Flow) rules.Decision {
		if f.Host == "spoofed.example.test" {
			return decision(rules.ActionSpoof, rules.Params{Addrs: []netip.Addr{loopback}})
		}
		return rules.Decision{}
	}})
	resp, body := w.get(plain.URLFor("spoofed.example.test"))
	if resp.StatusCode != 200 || body != Body {
		t.Fatalf("plain: got %d %q", resp.StatusCode, body)
	}
	if h := plain.Hosts(); len(h) != 1 || h[0] != fmt.Sprintf("spoofed.example.test:%d", plain.Port) {
		t.Errorf("upstream saw Host %v", h)
	}
	r2, err := w.client(5*time.Second, tlsUp.Roots(), "example.com").Get(tlsUp.URLFor("spoofed.example.test"))
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	r2.Body.Close()
	if len(w.Rules.Flows()) != 2 {
		t.Errorf("flows %v, want one question per request", w.Rules.Flows())
	}
}

func TestDelay(t *testing.T) {
	up := newUpstream(t, false)
	w := newWorld(t, worldConfig{Decide: func(rules.Flow) rules.Decision {
		return decision(rules.ActionDelay, rules.Params{Latency: 200 * time.Millisecond})
	}})
	start := time.Now()
	resp, body := w.get(up.URLFor("127.0.0.1"))
	if resp.StatusCode != 200 || body != Body {
		t.Fatalf("got %d %q", resp.StatusCode, body)
	}
	within(t, "delayed request", time.Since(start), 200*time.Millisecond, 2*time.Second)
}

func TestUnresolvableName(t *testing.T) {
	w := newWorld(t, worldConfig{})
	resp, body := w.get("http://nowhere.example.test/")
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(body, "nowhere.example.test") {
		t.Fatalf("got %d %q", resp.StatusCode, body)
	}
}

// TestDelayByNameAppliedOnce: the question by address after the lookup
// matches the same rule as the question by name; its delay is added once.
func TestDelayByNameAppliedOnce(t *testing.T) {
	up := newUpstream(t, false)
	rule := decision(rules.ActionDelay, rules.Params{Latency: 300 * time.Millisecond})
	w := newWorld(t, worldConfig{Hosts: testHosts, Decide: func(rules.Flow) rules.Decision { return rule }})
	start := time.Now()
	resp, body := w.get(up.URLFor("api.example.test"))
	if resp.StatusCode != 200 || body != Body {
		t.Fatalf("got %d %q", resp.StatusCode, body)
	}
	within(t, "request delayed by name", time.Since(start), 300*time.Millisecond, 550*time.Millisecond)
}

// TestLocalTargetsAreForLocalClients: a device may not reach the unicorn
// host's loopback (its control API, the proxy itself) through the proxy.
func TestLocalTargetsAreForLocalClients(t *testing.T) {
	device, local := netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("127.0.0.1")
	for _, tt := range []struct {
		client netip.Addr
		target string
		ok     bool
	}{
		{device, "127.0.0.1:9000", false},
		{device, "[::1]:9000", false},
		{device, "0.0.0.0:80", false},
		{device, "198.51.100.7:443", true},
		{local, "127.0.0.1:9000", true},
		{netip.MustParseAddr("::1"), "[::1]:9000", true},
	} {
		err := proxy.GuardTarget(tt.client, netip.MustParseAddrPort(tt.target))
		if (err == nil) != tt.ok {
			t.Errorf("client %v to %s: %v, want allowed=%v", tt.client, tt.target, err, tt.ok)
		}
	}
}
