package testbed

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestWalletSendRateLimited is issue 6's "done when" with the fake Infura:
// through unicorn's interception, eth_sendRawTransaction fails with the
// rule's rate-limit error while balances still load, alone and in a batch.
func TestWalletSendRateLimited(t *testing.T) {
	c, url := interceptingUnicorn(t, `scenario: infura-rate-limited
rules:
  - hosts: [mainnet.infura.io]
    action: rpc_error
    code: -32005
    message: daily request count exceeded, request rate limited
    jsonrpc: [eth_sendRawTransaction]
`)
	call := func(body string) []byte {
		t.Helper()
		resp, err := c.Post(url, "application/json", bytes.NewBufferString(body))
		if err != nil {
			t.Fatalf("POST %s: %v", body, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("POST %s: %d %s", body, resp.StatusCode, b)
		}
		return b
	}
	type reply struct {
		ID     json.RawMessage `json:"id"`
		Result string          `json:"result"`
		Error  *struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}

	var balance reply
	json.Unmarshal(call(`{"jsonrpc":"2.0","id":1,"method":"eth_getBalance","params":["0x0","latest"]}`), &balance)
	if balance.Error != nil || balance.Result != "0xde0b6b3a7640000" {
		t.Errorf("eth_getBalance: %+v, want the fake Infura's balance", balance)
	}
	var send reply
	json.Unmarshal(call(`{"jsonrpc":"2.0","id":"tx-7","method":"eth_sendRawTransaction","params":["0xf86c"]}`), &send)
	if send.Error == nil || send.Error.Code != -32005 || string(send.ID) != `"tx-7"` {
		t.Errorf("eth_sendRawTransaction: %+v, want error -32005 with id \"tx-7\"", send)
	}
	var batch []reply
	json.Unmarshal(call(`[{"jsonrpc":"2.0","id":10,"method":"eth_getBalance","params":["0x0","latest"]},
		{"jsonrpc":"2.0","id":11,"method":"eth_sendRawTransaction","params":["0xf86c"]},
		{"jsonrpc":"2.0","id":12,"method":"eth_blockNumber"}]`), &batch)
	if len(batch) != 3 || batch[0].Result == "" || batch[1].Error == nil || batch[1].Error.Code != -32005 ||
		string(batch[1].ID) != "11" || batch[2].Result != InfuraBlockNumber {
		t.Errorf("batch: %+v; want the balance, the rate-limit error for id 11, and the block number, in order", batch)
	}
}

// TestSlowBalance: a delay rule with jsonrpc: as a match field slows the
// named JSON-RPC method only, through interception, with the fake Infura.
func TestSlowBalance(t *testing.T) {
	c, url := interceptingUnicorn(t, "scenario: slow-balance\nrules:\n  - {hosts: [mainnet.infura.io], jsonrpc: [eth_getBalance], action: delay, latency: 500ms}\n")
	timed := func(body string) (time.Duration, string) {
		t.Helper()
		start := time.Now()
		resp, err := c.Post(url, "application/json", bytes.NewBufferString(body))
		if err != nil {
			t.Fatalf("POST %s: %v", body, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return time.Since(start), string(b)
	}
	timed(`{"jsonrpc":"2.0","id":0,"method":"eth_chainId"}`) // the handshake and the leaf, out of the timings
	if took, body := timed(`{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber"}`); took > 400*time.Millisecond || !bytes.Contains([]byte(body), []byte(InfuraBlockNumber)) {
		t.Errorf("eth_blockNumber took %v (%q), want it undelayed", took, body)
	}
	if took, body := timed(`{"jsonrpc":"2.0","id":2,"method":"eth_getBalance","params":["0x0","latest"]}`); took < 500*time.Millisecond || took > 3*time.Second || !bytes.Contains([]byte(body), []byte("0xde0b6b3a7640000")) {
		t.Errorf("eth_getBalance took %v (%q), want about 500ms late with the real balance", took, body)
	}
}

// interceptingUnicorn starts unicorn with rulesYAML, a fresh CA made by
// `unicorn ca init` and the testbed CA trusted upstream, and returns a
// client that trusts unicorn's CA (as a phone does after the page's
// steps) and the fake Infura's URL by name.
func interceptingUnicorn(t *testing.T, rulesYAML string) (*http.Client, string) {
	t.Helper()
	w := NewWorld(t)
	dir := filepath.Join(t.TempDir(), "ca")
	if out := Run(t, "ca", "init", "--dir", dir); out.Code != 0 {
		t.Fatalf("ca init: exit %d\n%s", out.Code, out.Stderr)
	}
	tmp := t.TempDir()
	upstreamCA := filepath.Join(tmp, "testbed-ca.pem")
	os.WriteFile(upstreamCA, TestCA().PEM(), 0o644)
	rulesFile := filepath.Join(tmp, "rules.yaml")
	os.WriteFile(rulesFile, []byte(rulesYAML), 0o644)
	u := w.Start(t, "--rules", rulesFile, "--ca-dir", dir, "--upstream-ca", upstreamCA)

	caPEM, _ := os.ReadFile(filepath.Join(dir, "ca.pem"))
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		Proxy:           http.ProxyURL(u.ProxyURL),
		TLSClientConfig: &tls.Config{RootCAs: roots},
	}}
	_, port, _ := net.SplitHostPort(w.InfuraTLS)
	return c, "https://mainnet.infura.io:" + port + "/v3/f315575765b14720b32382a61a89341a"
}
