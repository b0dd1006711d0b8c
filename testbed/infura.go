package testbed

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
)

// InfuraBlockNumber is the chain head the fake Infura reports: block
// 7,480,000, mainnet on Chaos Unicorn Day 2019.
const InfuraBlockNumber = "0x7222c0"

// infuraResults are the fixed answers of the fake Infura, by method.
var infuraResults = map[string]any{
	"eth_blockNumber": InfuraBlockNumber,
	"eth_chainId":     "0x1",
	"net_version":     "1",
	"eth_gasPrice":    "0x3b9aca00",
	"eth_getBalance":  "0xde0b6b3a7640000",
	// eth_call: an ERC-20 balanceOf of 1000 tokens (18 decimals).
	"eth_call":               "0x00000000000000000000000000000000000000000000003635c9adc5dea00000",
	"eth_sendRawTransaction": "0x5c504ed432cb51138bcf09aa5e8a410dd4a1e204ef84bfed1be16dfba1b22060",
	"web3_clientVersion":     "unicorn-testbed/fake-infura",
}

// maxRPCBody bounds a JSON-RPC request body.
const maxRPCBody = 1 << 20

// rpcRequest is one JSON-RPC 2.0 call.
type rpcRequest struct {
	JSONRPC string          `json:"jsonrpc"`
	Method  string          `json:"method"`
	ID      json.RawMessage `json:"id"`
}

// rpcResponse is one JSON-RPC 2.0 reply: Result or Error.
type rpcResponse struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Result  any             `json:"result,omitempty"`
	Error   *rpcError       `json:"error,omitempty"`
}

type rpcError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

// Infura returns a fake Infura JSON-RPC endpoint. It accepts POST on any
// path (Infura's are /v3/PROJECT-ID) with one call or a batch, and answers
// eth_blockNumber, eth_chainId, net_version, eth_gasPrice, eth_getBalance,
// eth_call, eth_sendRawTransaction and web3_clientVersion with fixed values; other methods get error -32601
// and malformed bodies -32700 or -32600, as a JSON-RPC server would.
//
// A WebSocket upgrade on any path is served by infuraWS: the same calls,
// and eth_subscribe to newHeads.
func Infura() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
			infuraWS(w, r)
			return
		}
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", "POST")
			http.Error(w, "JSON-RPC wants POST", http.StatusMethodNotAllowed)
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, maxRPCBody))
		if err != nil {
			return
		}
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		body = bytes.TrimSpace(body)
		if len(body) > 0 && body[0] == '[' {
			var batch []json.RawMessage
			if err := json.Unmarshal(body, &batch); err != nil {
				enc.Encode(rpcFailure(nil, -32700, "parse error"))
				return
			}
			if len(batch) == 0 {
				enc.Encode(rpcFailure(nil, -32600, "invalid request: empty batch"))
				return
			}
			out := make([]rpcResponse, len(batch))
			for i, raw := range batch {
				out[i] = rpcCall(raw)
			}
			enc.Encode(out)
			return
		}
		enc.Encode(rpcCall(body))
	})
}

// rpcCall answers one call given as raw JSON.
func rpcCall(raw []byte) rpcResponse {
	var req rpcRequest
	if err := json.Unmarshal(raw, &req); err != nil {
		return rpcFailure(nil, -32700, "parse error")
	}
	if req.JSONRPC != "2.0" || req.Method == "" {
		return rpcFailure(req.ID, -32600, "invalid request")
	}
	res, ok := infuraResults[req.Method]
	if !ok {
		return rpcFailure(req.ID, -32601, "the method "+req.Method+" does not exist/is not available")
	}
	return rpcResponse{JSONRPC: "2.0", ID: orNull(req.ID), Result: res}
}

func rpcFailure(id json.RawMessage, code int, msg string) rpcResponse {
	return rpcResponse{JSONRPC: "2.0", ID: orNull(id), Error: &rpcError{Code: code, Message: msg}}
}

// orNull keeps a missing id as JSON null, as the specification asks.
func orNull(id json.RawMessage) json.RawMessage {
	if len(id) == 0 {
		return json.RawMessage("null")
	}
	return id
}
