package testbed

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/coder/websocket"
)

// Bounds of the fake Infura's subscriptions.
const (
	headInterval = 200 * time.Millisecond // one newHeads notification per interval
	maxHeads     = 100                    // notifications per subscription
	maxSubs      = 8                      // subscriptions per connection
)

// infuraWS serves JSON-RPC over WebSocket as Infura's wss:// endpoint
// does: every call of Infura, one text message per call or batch, plus
// eth_subscribe("newHeads"), which answers a subscription id and then
// sends an eth_subscription notification with a new block header every
// 200 ms (at most 100), and eth_unsubscribe.
func infuraWS(w http.ResponseWriter, r *http.Request) {
	c, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	defer c.CloseNow()
	c.SetReadLimit(maxRPCBody)
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	var (
		wmu  sync.Mutex // one writer at a time
		wg   sync.WaitGroup
		smu  sync.Mutex
		subs = map[string]context.CancelFunc{}
	)
	defer wg.Wait()
	defer cancel()
	write := func(v any) error {
		data, err := json.Marshal(v)
		if err != nil {
			return err
		}
		wmu.Lock()
		defer wmu.Unlock()
		return c.Write(ctx, websocket.MessageText, data)
	}
	for n := 0; ; n++ {
		typ, data, err := c.Read(ctx)
		if err != nil {
			return
		}
		if typ != websocket.MessageText {
			continue
		}
		var req struct {
			rpcRequest
			Params []json.RawMessage `json:"params"`
		}
		if json.Unmarshal(data, &req) != nil || req.Method != "eth_subscribe" && req.Method != "eth_unsubscribe" {
			// One call or a batch: the same answers as over HTTP.
			rec := &wsRecorder{header: http.Header{}}
			Infura().ServeHTTP(rec, postRequest(r, data))
			wmu.Lock()
			err := c.Write(ctx, websocket.MessageText, rec.body)
			wmu.Unlock()
			if err != nil {
				return
			}
			continue
		}
		if req.Method == "eth_unsubscribe" {
			var id string
			if len(req.Params) > 0 {
				json.Unmarshal(req.Params[0], &id)
			}
			smu.Lock()
			stop, ok := subs[id]
			delete(subs, id)
			smu.Unlock()
			if ok {
				stop()
			}
			write(rpcResponse{JSONRPC: "2.0", ID: orNull(req.ID), Result: ok})
			continue
		}
		var kind string
		if len(req.Params) > 0 {
			json.Unmarshal(req.Params[0], &kind)
		}
		smu.Lock()
		full := len(subs) >= maxSubs
		smu.Unlock()
		switch {
		case kind != "newHeads":
			write(rpcFailure(req.ID, -32602, fmt.Sprintf("unsupported subscription %q (the fake knows newHeads)", kind)))
			continue
		case full:
			write(rpcFailure(req.ID, -32005, "too many subscriptions"))
			continue
		}
		id := fmt.Sprintf("0x%032x", n+1)
		sctx, stop := context.WithCancel(ctx)
		smu.Lock()
		subs[id] = stop
		smu.Unlock()
		if write(rpcResponse{JSONRPC: "2.0", ID: orNull(req.ID), Result: id}) != nil {
			stop()
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer stop()
			t := time.NewTicker(headInterval)
			defer t.Stop()
			for i := 1; i <= maxHeads; i++ {
				select {
				case <-sctx.Done():
					return
				case <-t.C:
				}
				head := map[string]string{
					"number": fmt.Sprintf("0x%x", 0x7222c0+i), "hash": fmt.Sprintf("0x%064x", 0x7222c0+i),
					"timestamp": fmt.Sprintf("0x%x", 1554109200+15*i),
				}
				note := map[string]any{"jsonrpc": "2.0", "method": "eth_subscription",
					"params": map[string]any{"subscription": id, "result": head}}
				if write(note) != nil {
					return
				}
			}
		}()
	}
}

// postRequest makes the POST request the HTTP handler answers for one
// WebSocket message.
func postRequest(r *http.Request, body []byte) *http.Request {
	req, _ := http.NewRequestWithContext(r.Context(), http.MethodPost, r.URL.String(), bytes.NewReader(body))
	return req
}

// wsRecorder collects what the HTTP handler writes.
type wsRecorder struct {
	header http.Header
	body   []byte
}

func (w *wsRecorder) Header() http.Header         { return w.header }
func (w *wsRecorder) WriteHeader(int)             {}
func (w *wsRecorder) Write(p []byte) (int, error) { w.body = append(w.body, p...); return len(p), nil }
