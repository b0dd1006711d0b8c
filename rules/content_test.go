package rules

import (
	"net/http"
	"testing"
)

const contentRules = `
scenario: content
services:
  api: {hosts: [api.example.test]}
  other: {domains: [other.example.test]}
  cut: {domains: [cut.example.test]}
rules:
  - {hosts: [api.example.test], methods: [post], paths: ["/v3/*", /exact], action: http_error, status: 429}
  - {service: api, request_headers: {user-agent: "okhttp*"}, action: reject}
  - {domains: [late.example.test], action: rpc_error, code: -32005}
  - {service: cut, action: reject}
  - {domains: [cut.example.test], methods: [GET], action: http_error, status: 500}
  - {ips: [198.51.100.0/24], paths: [/x], action: reject}
  - {domains: [ports.example.test], ports: [8443], methods: [GET], action: reject}
  - {domains: [example.test], action: delay, latency: 1s}
`

func hdr(kv ...string) func(string) string {
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Set(kv[i], kv[i+1])
	}
	return h.Get
}

func TestDecideContent(t *testing.T) {
	e := mustEngine(t, contentRules)
	api := "api.example.test"
	tests := []struct {
		name   string
		flow   Flow
		action Action
		rule   int
	}{
		{"post prefix path", Flow{Layer: LayerHTTP, Host: api, Port: 80, Method: "POST", Path: "/v3/x"}, ActionHTTPError, 0},
		{"method any case", Flow{Layer: LayerHTTP, Host: api, Port: 80, Method: "post", Path: "/v3/"}, ActionHTTPError, 0},
		{"exact path", Flow{Layer: LayerHTTP, Host: api, Port: 80, Method: "POST", Path: "/exact"}, ActionHTTPError, 0},
		{"exact path is not a prefix", Flow{Layer: LayerHTTP, Host: api, Port: 80, Method: "POST", Path: "/exact/more"}, ActionDelay, 7},
		{"prefix is not the bare dir", Flow{Layer: LayerHTTP, Host: api, Port: 80, Method: "POST", Path: "/v3"}, ActionDelay, 7},
		{"other method", Flow{Layer: LayerHTTP, Host: api, Port: 80, Method: "GET", Path: "/v3/x"}, ActionDelay, 7},
		{"header prefix, any case", Flow{Layer: LayerHTTP, Host: api, Port: 80, Method: "GET", Path: "/", Header: hdr("User-Agent", "OkHttp/4.9")}, ActionReject, 1},
		{"header no match", Flow{Layer: LayerHTTP, Host: api, Port: 80, Method: "GET", Path: "/", Header: hdr("User-Agent", "curl/8")}, ActionDelay, 7},
		{"header missing", Flow{Layer: LayerHTTP, Host: api, Port: 80, Method: "GET", Path: "/", Header: hdr()}, ActionDelay, 7},
		{"connect: content unknown", Flow{Layer: LayerHTTP, Host: api, Port: 443}, ActionDelay, 7},
		{"dns skips content rules", Flow{Layer: LayerDNS, Host: api}, ActionDelay, 7},
		{"tcp skips content rules", Flow{Layer: LayerTCP, Host: api, Port: 443, Method: "POST", Path: "/v3/x"}, ActionDelay, 7},
		{"address rule with path", Flow{Layer: LayerHTTP, Addr: addr("198.51.100.9"), Port: 80, Method: "GET", Path: "/x"}, ActionReject, 5},
		{"address rule, other path", Flow{Layer: LayerHTTP, Addr: addr("198.51.100.9"), Port: 80, Method: "GET", Path: "/y"}, ActionAllow, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := e.Decide(tt.flow)
			rule := -1
			if d.Rule != nil {
				rule = d.Rule.Index
			}
			if d.Action != tt.action || rule != tt.rule {
				t.Errorf("Decide(%v) = %v (rule %d), want %v (rule %d)", tt.flow, d.Action, rule, tt.action, tt.rule)
			}
		})
	}
}

func TestNeedsContent(t *testing.T) {
	e := mustEngine(t, contentRules)
	tests := []struct {
		name string
		flow Flow
		want bool
	}{
		{"host with content rules", Flow{Layer: LayerHTTP, Host: "api.example.test", Port: 443}, true},
		{"rpc_error needs content", Flow{Layer: LayerHTTP, Host: "x.late.example.test", Port: 443}, true},
		{"host without content rules", Flow{Layer: LayerHTTP, Host: "plain.example.test", Port: 443}, false},
		{"unknown host", Flow{Layer: LayerHTTP, Host: "nowhere.test", Port: 443}, false},
		{"an earlier rule decides outright", Flow{Layer: LayerHTTP, Host: "cut.example.test", Port: 443}, false},
		{"by address", Flow{Layer: LayerHTTP, Addr: addr("198.51.100.9"), Port: 443}, true},
		{"by name and address", Flow{Layer: LayerHTTP, Host: "plain.example.test", Addr: addr("198.51.100.9"), Port: 443}, true},
		{"ports still apply", Flow{Layer: LayerHTTP, Host: "ports.example.test", Port: 443}, false},
		{"ports match", Flow{Layer: LayerHTTP, Host: "ports.example.test", Port: 8443}, true},
	}
	for _, tt := range tests {
		if got := e.NeedsContent(tt.flow); got != tt.want {
			t.Errorf("%s: NeedsContent(%v) = %v, want %v", tt.name, tt.flow, got, tt.want)
		}
	}
	plain := mustEngine(t, engineRules)
	if plain.NeedsContent(Flow{Layer: LayerHTTP, Host: "api.wallet.example", Port: 443}) {
		t.Error("NeedsContent true without any content rule")
	}
	if !plain.NeedsContent(Flow{Layer: LayerHTTP, Host: "late.example", Port: 443}) {
		t.Error("NeedsContent false for an http_error host")
	}
}

func TestContentAllocatesNothing(t *testing.T) {
	e := mustEngine(t, contentRules)
	h := hdr("User-Agent", "okhttp/4")
	flows := []Flow{
		{Layer: LayerHTTP, Host: "api.example.test", Port: 80, Method: "POST", Path: "/v3/x"},
		{Layer: LayerHTTP, Host: "api.example.test", Port: 80, Method: "GET", Path: "/", Header: h},
		{Layer: LayerDNS, Host: "api.example.test"},
	}
	for _, f := range flows {
		if n := testing.AllocsPerRun(100, func() { e.Decide(f); e.NeedsContent(f) }); n != 0 {
			t.Errorf("Decide/NeedsContent(%v) allocates %.0f times", f, n)
		}
	}
}

func TestJSONRPCMatch(t *testing.T) {
	e := mustEngine(t, `
scenario: rpc
rules:
  - {hosts: [rpc.example.test], jsonrpc: [eth_sendRawTransaction], action: delay, latency: 2s}
  - {hosts: [rpc.example.test], action: rpc_error, code: -32000, jsonrpc: [eth_call]}
`)
	calls := func(m ...string) func() []string { return func() []string { return m } }
	for _, tt := range []struct {
		name string
		flow Flow
		want Action
		rule int
	}{
		{"faulted method", Flow{Layer: LayerHTTP, Host: "rpc.example.test", Method: "POST", RPCMethods: calls("eth_sendRawTransaction")}, ActionDelay, 0},
		{"in a batch", Flow{Layer: LayerHTTP, Host: "rpc.example.test", Method: "POST", RPCMethods: calls("eth_getBalance", "eth_sendRawTransaction")}, ActionDelay, 0},
		{"another method", Flow{Layer: LayerHTTP, Host: "rpc.example.test", Method: "POST", RPCMethods: calls("eth_getBalance")}, ActionRPCError, 1},
		{"body unknown", Flow{Layer: LayerHTTP, Host: "rpc.example.test", Method: "POST"}, ActionRPCError, 1},
		{"at dns", Flow{Layer: LayerDNS, Host: "rpc.example.test"}, ActionAllow, 1},
	} {
		d := e.Decide(tt.flow)
		if d.Action != tt.want || d.Rule == nil || d.Rule.Index != tt.rule {
			t.Errorf("%s: %v, want %v by rules[%d]", tt.name, d, tt.want, tt.rule)
		}
	}
	if !e.NeedsContent(Flow{Layer: LayerHTTP, Host: "rpc.example.test", Port: 443}) {
		t.Error("NeedsContent false for a host with a jsonrpc rule")
	}
}
