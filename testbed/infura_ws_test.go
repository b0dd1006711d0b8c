package testbed_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/chaos-unicorn/unicorn/testbed"
)

func TestInfuraWebSocket(t *testing.T) {
	t.Parallel()
	addr, _ := testbed.ServeHTTP(t, "127.0.0.1", testbed.Infura())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws://"+addr+"/ws/v3/probe", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	call := func(msg string) map[string]any {
		t.Helper()
		if err := c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		return read(t, ctx, c)
	}
	if r := call(`{"jsonrpc":"2.0","id":1,"method":"eth_call","params":[{"to":"0x01","data":"0x70a08231"},"latest"]}`); r["result"] != "0x00000000000000000000000000000000000000000000003635c9adc5dea00000" {
		t.Errorf("eth_call over WebSocket: %v", r)
	}
	sub := call(`{"jsonrpc":"2.0","id":2,"method":"eth_subscribe","params":["newHeads"]}`)
	id, _ := sub["result"].(string)
	if id == "" || sub["id"] != float64(2) {
		t.Fatalf("eth_subscribe: %v", sub)
	}
	var last string
	for i := 0; i < 2; i++ {
		n := read(t, ctx, c)
		params, _ := n["params"].(map[string]any)
		head, _ := params["result"].(map[string]any)
		if n["method"] != "eth_subscription" || params["subscription"] != id || head["number"] == nil || head["number"] == last {
			t.Fatalf("notification %d: %v", i, n)
		}
		last, _ = head["number"].(string)
	}
	if err := c.Write(ctx, websocket.MessageText, []byte(`{"jsonrpc":"2.0","id":3,"method":"eth_unsubscribe","params":["`+id+`"]}`)); err != nil {
		t.Fatal(err)
	}
	// A notification may already be on its way; then the answer.
	for i := 0; i < 3; i++ {
		r := read(t, ctx, c)
		if r["id"] == float64(3) {
			if r["result"] != true {
				t.Errorf("eth_unsubscribe: %v", r)
			}
			return
		}
	}
	t.Error("no answer to eth_unsubscribe")
}

func read(t *testing.T, ctx context.Context, c *websocket.Conn) map[string]any {
	t.Helper()
	_, data, err := c.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatalf("%v: %s", err, data)
	}
	return m
}
