package testbed

import (
	"encoding/json"
	"net/http"
)

// EtherscanTx is one transaction in the fake Etherscan's txlist, with the
// fields (all strings, as Etherscan sends them) the Status wallet reads.
type EtherscanTx struct {
	BlockNumber     string `json:"blockNumber"`
	TimeStamp       string `json:"timeStamp"`
	Hash            string `json:"hash"`
	From            string `json:"from"`
	To              string `json:"to"`
	Value           string `json:"value"`
	Gas             string `json:"gas"`
	GasPrice        string `json:"gasPrice"`
	GasUsed         string `json:"gasUsed"`
	IsError         string `json:"isError"`
	TxReceiptStatus string `json:"txreceipt_status"`
	Input           string `json:"input"`
	Confirmations   string `json:"confirmations"`
}

// EtherscanReply is the envelope of every Etherscan API answer: Status "1"
// and Message "OK" with a list, or "0" and "NOTOK" with an error string.
type EtherscanReply struct {
	Status  string `json:"status"`
	Message string `json:"message"`
	Result  any    `json:"result"`
}

// etherscanPeer is the counterparty of the fake history.
const etherscanPeer = "0x0000000000000000000000000000000000c0ffee"

// Etherscan returns a fake Etherscan REST API: GET /api with
// module=account&action=txlist answers two transactions to and from the
// address asked about; anything else gets Etherscan's NOTOK envelope.
// Like Etherscan, it answers errors with status 200.
func Etherscan() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api" {
			http.NotFound(w, r)
			return
		}
		q := r.URL.Query()
		var reply EtherscanReply
		switch {
		case q.Get("module") != "account":
			reply = EtherscanReply{"0", "NOTOK", "Error! Missing Or invalid Module name"}
		case q.Get("action") != "txlist":
			reply = EtherscanReply{"0", "NOTOK", "Error! Missing Or invalid Action name"}
		default:
			addr := q.Get("address")
			if addr == "" {
				addr = "0x0000000000000000000000000000000000000001"
			}
			reply = EtherscanReply{"1", "OK", []EtherscanTx{
				etherscanTx("7479990", "1554109200", "0x01", etherscanPeer, addr, "1000000000000000000"),
				etherscanTx("7479999", "1554109320", "0x02", addr, etherscanPeer, "250000000000000000"),
			}}
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(reply)
	})
}

func etherscanTx(block, ts, hashEnd, from, to, value string) EtherscanTx {
	hash := "0x" + "00000000000000000000000000000000000000000000000000000000000000"[:62] + hashEnd[2:]
	return EtherscanTx{
		BlockNumber: block, TimeStamp: ts, Hash: hash, From: from, To: to, Value: value,
		Gas: "21000", GasPrice: "1000000000", GasUsed: "21000", IsError: "0",
		TxReceiptStatus: "1", Input: "0x", Confirmations: "12",
	}
}
