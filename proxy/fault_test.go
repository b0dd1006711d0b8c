package proxy_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chaos-unicorn/unicorn/rules"
)

// rpcServer is a fake JSON-RPC origin: it answers each call with
// {"result":"ok-<method>"} and records the bodies it received.
type rpcServer struct {
	mu     sync.Mutex
	bodies []string
	hits   atomic.Int64
}

func (s *rpcServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.hits.Add(1)
	b, _ := io.ReadAll(r.Body)
	s.mu.Lock()
	s.bodies = append(s.bodies, string(b))
	s.mu.Unlock()
	type call struct {
		Method string          `json:"method"`
		ID     json.RawMessage `json:"id"`
	}
	answer := func(c call) map[string]any {
		return map[string]any{"jsonrpc": "2.0", "id": c.ID, "result": "ok-" + c.Method}
	}
	w.Header().Set("Content-Type", "application/json")
	var one call
	if json.Unmarshal(b, &one) == nil && one.Method != "" {
		json.NewEncoder(w).Encode(answer(one))
		return
	}
	var batch []call
	if json.Unmarshal(b, &batch) == nil {
		out := []map[string]any{}
		for _, c := range batch {
			if len(c.ID) > 0 {
				out = append(out, answer(c))
			}
		}
		json.NewEncoder(w).Encode(out)
		return
	}
	io.WriteString(w, "not json-rpc: "+string(b))
}

func (s *rpcServer) Bodies() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.bodies...)
}

func post(t *testing.T, cl *http.Client, u, body string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, u, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	return do(t, cl, req)
}

var rpcParams = rules.Params{RPCCode: -32000, RPCMessage: "injected", RPCMethods: []string{"eth_call"}}

func TestPlainHTTPError(t *testing.T) {
	up := newUpstream(t, false)
	var fault atomic.Bool
	d := decision(rules.ActionHTTPError, rules.Params{Status: 418, Headers: http.Header{"X-Test": {"yes"}}, Body: "teapot\n"})
	w := newWorld(t, worldConfig{Decide: func(rules.Flow) rules.Decision {
		if fault.Load() {
			return d
		}
		return rules.Decision{}
	}})
	cl, dials := oneConnClient(w)
	// The first request starts a lean session; the second, on the same
	// connection, must be handed back and answered by the rule.
	if _, body := get(t, cl, up.URLFor("127.0.0.1")); body != Body {
		t.Fatalf("allowed request got %q", body)
	}
	fault.Store(true)
	for range 2 {
		resp, body := get(t, cl, up.URLFor("127.0.0.1"))
		if resp.StatusCode != 418 || body != "teapot\n" || resp.Header.Get("X-Test") != "yes" ||
			resp.Header.Get(HeaderRuleName) != testRef || resp.Header.Get("X-Unicorn-Action") != "http_error" {
			t.Fatalf("got %d %q %v", resp.StatusCode, body, resp.Header)
		}
	}
	if up.Hits() != 1 {
		t.Errorf("upstream got %d requests, want 1 (the allowed one)", up.Hits())
	}
	if n := dials.Load(); n != 1 {
		t.Errorf("client opened %d connections, want 1", n)
	}
}

// HeaderRuleName is proxy.HeaderRule, spelled out to check the wire name.
const HeaderRuleName = "X-Unicorn-Rule"

func TestPlainRPCError(t *testing.T) {
	rs := &rpcServer{}
	srv := httptest.NewServer(rs)
	t.Cleanup(srv.Close)
	w := newWorld(t, worldConfig{Decide: func(rules.Flow) rules.Decision {
		return decision(rules.ActionRPCError, rpcParams)
	}})
	testRPC(t, w.client(0, nil, ""), srv.URL, rs)
}

// testRPC checks rpc_error answers through cl against the rpcServer rs at u.
func testRPC(t *testing.T, cl *http.Client, u string, rs *rpcServer) {
	t.Helper()
	check := func(name, body string, wantStatus int, want string, wantUp string) {
		t.Helper()
		before := len(rs.Bodies())
		resp, got := post(t, cl, u, body)
		if resp.StatusCode != wantStatus || strings.TrimSpace(got) != want {
			t.Errorf("%s: got %d %s, want %d %s", name, resp.StatusCode, got, wantStatus, want)
		}
		bodies := rs.Bodies()[before:]
		switch {
		case wantUp == "" && len(bodies) != 0:
			t.Errorf("%s: upstream got %q, want nothing", name, bodies)
		case wantUp != "" && (len(bodies) != 1 || bodies[0] != wantUp):
			t.Errorf("%s: upstream got %q, want %s", name, bodies, wantUp)
		}
	}
	check("number id", `{"jsonrpc":"2.0","id":7,"method":"eth_call","params":[]}`, 200,
		`{"jsonrpc":"2.0","id":7,"error":{"code":-32000,"message":"injected"}}`, "")
	check("string id", `{"jsonrpc":"2.0","id":"ab-c","method":"eth_call"}`, 200,
		`{"jsonrpc":"2.0","id":"ab-c","error":{"code":-32000,"message":"injected"}}`, "")
	fwd := `{"jsonrpc":"2.0","id":8,"method":"eth_blockNumber"}`
	check("other method", fwd, 200, `{"id":8,"jsonrpc":"2.0","result":"ok-eth_blockNumber"}`, fwd)
	check("batch",
		`[{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber"},{"jsonrpc":"2.0","id":"x","method":"eth_call"},`+
			`{"jsonrpc":"2.0","method":"eth_call"},{"jsonrpc":"2.0","id":3,"method":"eth_chainId"}]`, 200,
		`[{"id":1,"jsonrpc":"2.0","result":"ok-eth_blockNumber"},{"jsonrpc":"2.0","id":"x","error":{"code":-32000,"message":"injected"}},`+
			`{"id":3,"jsonrpc":"2.0","result":"ok-eth_chainId"}]`,
		`[{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber"},{"jsonrpc":"2.0","id":3,"method":"eth_chainId"}]`)
	plainBatch := `[{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber"}]`
	check("batch not faulted", plainBatch, 200, `[{"id":1,"jsonrpc":"2.0","result":"ok-eth_blockNumber"}]`, plainBatch)
	check("not json", "hello there", 200, "not json-rpc: hello there", "hello there")
	if t.Failed() {
		return
	}
	if n := rs.hits.Load(); n != 4 {
		t.Errorf("upstream got %d requests, want 4", n)
	}
}

// TestHTTPErrorLatency: an http_error rule with a latency answers late,
// still without asking the upstream.
func TestHTTPErrorLatency(t *testing.T) {
	up := newUpstream(t, false)
	d := decision(rules.ActionHTTPError, rules.Params{Status: 504, Body: "slow\n", Latency: 300 * time.Millisecond})
	w := newWorld(t, worldConfig{Decide: func(rules.Flow) rules.Decision { return d }})
	start := time.Now()
	resp, body := w.get(up.URLFor("127.0.0.1"))
	if resp.StatusCode != 504 || body != "slow\n" {
		t.Fatalf("got %d %q", resp.StatusCode, body)
	}
	within(t, "delayed http_error", time.Since(start), 300*time.Millisecond, 2*time.Second)
	if up.Hits() != 0 {
		t.Errorf("upstream got %d requests", up.Hits())
	}
}
