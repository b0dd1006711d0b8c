package proxy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"sync"

	"github.com/chaos-unicorn/unicorn/rules"
)

// maxRPCBody bounds the JSON-RPC request and upstream response bodies an
// rpc_error rule reads. A larger request is forwarded untouched.
const maxRPCBody = 10 << 20

// httpErrorResponse is the answer to req of an http_error rule: the rule's
// status, headers and body, plus the headers that name the rule.
func httpErrorResponse(req *http.Request, d rules.Decision) *http.Response {
	ps := d.Params()
	status, body := http.StatusInternalServerError, ""
	h := http.Header{}
	if ps != nil {
		if ps.Status != 0 {
			status = ps.Status
		}
		body = ps.Body
		h = ps.Headers.Clone()
		if h == nil {
			h = http.Header{}
		}
	}
	setRuleHeaders(h, d)
	h.Set("Content-Length", strconv.Itoa(len(body)))
	return cannedResponse(req, status, h, body)
}

// setRuleHeaders adds the X-Unicorn-* headers that name d's rule.
func setRuleHeaders(h http.Header, d rules.Decision) {
	ref := "no rule"
	if d.Rule != nil {
		ref = d.Rule.Ref()
	}
	h.Set(HeaderScenario, d.Scenario())
	h.Set(HeaderRule, ref)
	h.Set(HeaderAction, d.Action.String())
}

func cannedResponse(req *http.Request, status int, h http.Header, body string) *http.Response {
	return blockPage{status: status, header: h, body: body}.response(req)
}

// rpcCall is what an rpc_error rule reads of one JSON-RPC request.
type rpcCall struct {
	Method *string         `json:"method"`
	ID     json.RawMessage `json:"id"` // empty for a notification
}

// rpcErrorBody is one injected JSON-RPC error response.
type rpcErrorBody struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Error   rpcErrorObject  `json:"error"`
}

type rpcErrorObject struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

// parseCall returns the call raw holds, or false when raw is not a
// JSON-RPC request object.
func parseCall(raw json.RawMessage) (rpcCall, bool) {
	var c rpcCall
	if len(bytes.TrimSpace(raw)) == 0 || bytes.TrimSpace(raw)[0] != '{' {
		return c, false
	}
	if err := json.Unmarshal(raw, &c); err != nil || c.Method == nil {
		return c, false
	}
	return c, true
}

// faulted reports whether an rpc_error rule with params ps applies to c.
func faulted(ps *rules.Params, c rpcCall) bool {
	return len(ps.RPCMethods) == 0 || slices.Contains(ps.RPCMethods, *c.Method)
}

// rpcError is the error element answering c.
func rpcError(ps *rules.Params, c rpcCall) json.RawMessage {
	b, _ := json.Marshal(rpcErrorBody{JSONRPC: "2.0", ID: c.ID, Error: rpcErrorObject{Code: ps.RPCCode, Message: ps.RPCMessage}})
	return b
}

// idKey is the compact text of a JSON-RPC id, to match responses to requests.
func idKey(id json.RawMessage) string {
	var b bytes.Buffer
	if json.Compact(&b, id) != nil {
		return string(id)
	}
	return b.String()
}

// rpcFault applies an rpc_error decision d to req, which is ready to be
// forwarded. It returns the request to forward (its body restored) and no
// response, or a response: the injected error, or for a batch the merge
// of injected errors and the upstream's answers to the other calls.
func (p *Proxy) rpcFault(req *http.Request, d rules.Decision) (*http.Request, *http.Response) {
	ps := d.Params()
	if ps == nil || req.Body == nil || req.Body == http.NoBody {
		return req, nil
	}
	body, err := io.ReadAll(io.LimitReader(req.Body, maxRPCBody+1))
	if err != nil {
		req.Body.Close()
		return req, textResponse(req, http.StatusBadRequest, "unicorn: reading request body: "+err.Error())
	}
	if len(body) > maxRPCBody {
		// Too large to inspect: forward it as it came.
		req.Body = readCloser{io.MultiReader(bytes.NewReader(body), req.Body), req.Body}
		return req, nil
	}
	req.Body.Close()
	restore(req, body)

	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 {
		return req, nil
	}
	if trimmed[0] == '{' {
		c, ok := parseCall(trimmed)
		if !ok || !faulted(ps, c) {
			return req, nil
		}
		if len(c.ID) == 0 {
			return req, rpcResponse(req, d, http.StatusNoContent, nil)
		}
		return req, rpcResponse(req, d, http.StatusOK, rpcError(ps, c))
	}
	if trimmed[0] != '[' {
		return req, nil
	}
	var elems []json.RawMessage
	if json.Unmarshal(trimmed, &elems) != nil || len(elems) == 0 {
		return req, nil
	}
	calls := make([]rpcCall, len(elems))
	hit := make([]bool, len(elems))
	var fwd []json.RawMessage
	nHit := 0
	for i, e := range elems {
		c, ok := parseCall(e)
		calls[i] = c
		if ok && faulted(ps, c) {
			hit[i] = true
			nHit++
		} else {
			fwd = append(fwd, e)
		}
	}
	if nHit == 0 {
		return req, nil
	}
	answers := map[string]json.RawMessage{}
	if len(fwd) > 0 {
		var resp *http.Response
		answers, resp = p.forwardBatch(req, fwd)
		if resp != nil {
			return req, resp // the upstream did not answer with a batch: pass on what it said
		}
	}
	var out []json.RawMessage
	for i, c := range calls {
		switch {
		case hit[i] && len(c.ID) > 0:
			out = append(out, rpcError(ps, c))
		case !hit[i] && len(c.ID) > 0:
			if a, ok := answers[idKey(c.ID)]; ok {
				out = append(out, a)
			}
		}
	}
	if len(out) == 0 {
		return req, rpcResponse(req, d, http.StatusNoContent, nil)
	}
	b, _ := json.Marshal(out)
	return req, rpcResponse(req, d, http.StatusOK, b)
}

// forwardBatch sends the calls fwd to req's upstream as one batch and
// returns the upstream's answers by id. When the upstream does not answer
// with a JSON array (an HTTP error, say), it returns that response instead.
func (p *Proxy) forwardBatch(req *http.Request, fwd []json.RawMessage) (map[string]json.RawMessage, *http.Response) {
	b, _ := json.Marshal(fwd)
	out := req.Clone(req.Context())
	out.RequestURI = ""
	restore(out, b)
	removeHopHeaders(out.Header)
	// The answer is parsed here: ask for it uncompressed.
	out.Header.Del("Accept-Encoding")
	resp, err := p.tr.RoundTrip(out)
	if err != nil {
		return nil, textResponse(req, http.StatusBadGateway, "unicorn: cannot reach "+req.URL.Host+": "+err.Error())
	}
	orig := resp.Body
	defer orig.Close()
	rb, err := io.ReadAll(io.LimitReader(resp.Body, maxRPCBody+1))
	if err != nil || len(rb) > maxRPCBody {
		return nil, textResponse(req, http.StatusBadGateway, fmt.Sprintf("unicorn: reading the batch answer of %s: %v", req.URL.Host, err))
	}
	answers := map[string]json.RawMessage{}
	trimmed := bytes.TrimSpace(rb)
	var elems []json.RawMessage
	if resp.StatusCode/100 == 2 && (len(trimmed) == 0 || json.Unmarshal(trimmed, &elems) == nil) {
		for _, e := range elems {
			var r struct {
				ID json.RawMessage `json:"id"`
			}
			if json.Unmarshal(e, &r) == nil && len(r.ID) > 0 {
				answers[idKey(r.ID)] = e
			}
		}
		return answers, nil
	}
	resp.Body = io.NopCloser(bytes.NewReader(rb))
	resp.ContentLength = int64(len(rb))
	resp.Header.Set("Content-Length", strconv.Itoa(len(rb)))
	resp.Header.Del("Transfer-Encoding")
	resp.TransferEncoding = nil
	return nil, resp
}

// rpcResponse is a JSON response to req carrying body (nil: none).
func rpcResponse(req *http.Request, d rules.Decision, status int, body []byte) *http.Response {
	h := http.Header{}
	if body != nil {
		h.Set("Content-Type", "application/json")
	}
	setRuleHeaders(h, d)
	if status != http.StatusNoContent {
		h.Set("Content-Length", strconv.Itoa(len(body)))
	}
	return cannedResponse(req, status, h, string(body))
}

// restore makes body req's body, of known length.
func restore(req *http.Request, body []byte) {
	req.Body = io.NopCloser(bytes.NewReader(body))
	req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	req.ContentLength = int64(len(body))
	req.TransferEncoding = nil
	req.Header.Set("Content-Length", strconv.Itoa(len(body)))
	if len(body) == 0 {
		req.Body = http.NoBody
	}
}

// readCloser reads from r and closes c.
type readCloser struct {
	io.Reader
	c io.Closer
}

func (rc readCloser) Close() error { return rc.c.Close() }

// rpcMethodsOf returns, for Flow.RPCMethods, a function that reads req's
// body once (up to maxRPCBody; a larger or unreadable body is not looked
// at), puts it back for the upstream, and names the JSON-RPC methods it
// calls: nil when it is not JSON-RPC. The rules call it only when a rule
// with jsonrpc: is in question, so other requests are never read early.
func rpcMethodsOf(req *http.Request) func() []string {
	if req.Method != http.MethodPost || req.Body == nil || req.Body == http.NoBody {
		return nil
	}
	var once sync.Once
	var methods []string
	return func() []string {
		once.Do(func() {
			body, err := io.ReadAll(io.LimitReader(req.Body, maxRPCBody+1))
			if err != nil || len(body) > maxRPCBody {
				req.Body = readCloser{io.MultiReader(bytes.NewReader(body), req.Body), req.Body}
				return
			}
			req.Body.Close()
			restore(req, body)
			trimmed := bytes.TrimSpace(body)
			var raws []json.RawMessage
			switch {
			case len(trimmed) > 0 && trimmed[0] == '[':
				if json.Unmarshal(trimmed, &raws) != nil {
					return
				}
			default:
				raws = []json.RawMessage{trimmed}
			}
			for _, raw := range raws {
				if c, ok := parseCall(raw); ok {
					methods = append(methods, *c.Method)
				}
			}
		})
		return methods
	}
}
