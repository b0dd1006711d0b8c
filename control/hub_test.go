package control

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/chaos-unicorn/unicorn/rules"
)

func testRule(action rules.Action, p rules.Params) *rules.Rule {
	return &rules.Rule{Scenario: "lab", Index: 2, Pos: rules.Pos{File: "lab.yaml", Line: 7}, Service: "infura", Action: action, Params: p}
}

func TestOutcome(t *testing.T) {
	tests := []struct {
		layer  rules.Layer
		action rules.Action
		p      rules.Params
		want   string
	}{
		{rules.LayerDNS, rules.ActionReject, rules.Params{}, "NXDOMAIN"},
		{rules.LayerDNS, rules.ActionReject, rules.Params{RCode: rules.RCodeServFail}, "SERVFAIL"},
		{rules.LayerHTTP, rules.ActionReject, rules.Params{}, "403 page"},
		{rules.LayerTCP, rules.ActionReject, rules.Params{}, "connection reset"},
		{rules.LayerDNS, rules.ActionBlackhole, rules.Params{}, "no answer"},
		{rules.LayerDNS, rules.ActionSinkhole, rules.Params{}, "0.0.0.0"},
		{rules.LayerHTTP, rules.ActionSinkhole, rules.Params{}, "502 page"},
		{rules.LayerDNS, rules.ActionSpoof, rules.Params{Addrs: []netip.Addr{netip.MustParseAddr("192.0.2.7")}}, "spoofed to 192.0.2.7"},
		{rules.LayerHTTP, rules.ActionDelay, rules.Params{Latency: 2 * time.Second}, "delayed 2s"},
		{rules.LayerHTTP, rules.ActionDelay, rules.Params{Latency: 2 * time.Second, Jitter: 500 * time.Millisecond}, "delayed 2s ±500ms"},
		{rules.LayerTCP, rules.ActionThrottle, rules.Params{Rate: 10 << 10}, "throttled to 10 KiB/s"},
		{rules.LayerTCP, rules.ActionCut, rules.Params{AfterBytes: 100}, "cut after 100 bytes"},
		{rules.LayerTLS, rules.ActionTLSReset, rules.Params{}, "connection reset after the ClientHello"},
		{rules.LayerTLS, rules.ActionTLSReset, rules.Params{Close: rules.CloseAlert}, "TLS alert after the ClientHello"},
		{rules.LayerTCP, rules.ActionStall, rules.Params{AfterBytes: 4096}, "stalled after 4096 bytes"},
		{rules.LayerTCP, rules.ActionSlowClose, rules.Params{Latency: 20 * time.Second}, "closed 20s late"},
		{rules.LayerDNS, rules.ActionTruncate, rules.Params{}, "truncated (TC bit): retry over TCP"},
		{rules.LayerHTTP, rules.ActionHTTPError, rules.Params{Status: 503}, "HTTP 503"},
		{rules.LayerHTTP, rules.ActionRPCError, rules.Params{RPCCode: -32005}, "JSON-RPC error -32005"},
		{rules.LayerHTTP, rules.ActionTLSFail, rules.Params{TLSFailure: rules.TLSSelfSigned}, "bad certificate (self signed)"},
	}
	for _, tt := range tests {
		if got := Outcome(tt.layer, tt.action, &tt.p); got != tt.want {
			t.Errorf("Outcome(%s, %s) = %q, want %q", tt.layer, tt.action, got, tt.want)
		}
	}
}

// TestSOCKSEvents: a SOCKS CONNECT is asked as a CONNECT (LayerHTTP);
// its events say socks and the reply the client got, not a 403 page.
func TestSOCKSEvents(t *testing.T) {
	h := NewHub(HubConfig{})
	defer h.Close()
	client := netip.MustParseAddr("192.0.2.7")
	for _, a := range []rules.Action{rules.ActionReject, rules.ActionSinkhole, rules.ActionBlackhole} {
		f := rules.Flow{Client: client, Layer: rules.LayerHTTP, Host: "infura.io", Port: 443, Via: "socks"}
		h.Observe(time.Unix(1, 0), &f, rules.Decision{Action: a, Rule: testRule(a, rules.Params{})})
	}
	h.Flush()
	var got []string
	for _, ev := range h.Ring().Recent(Filter{}, 0) {
		got = append(got, ev.Layer+" "+ev.Target+": "+ev.Outcome)
	}
	want := []string{
		"socks infura.io:443: SOCKS refused (not allowed by ruleset)",
		"socks infura.io:443: SOCKS host unreachable",
		"socks infura.io:443: no answer (connection held)",
	}
	if !slices.Equal(got, want) {
		t.Errorf("events:\n%q\nwant\n%q", got, want)
	}
}

// observe feeds the hub n reject decisions for name-i from client.
func observe(h *Hub, n int, client string) {
	r := testRule(rules.ActionReject, rules.Params{})
	for i := range n {
		f := rules.Flow{Client: netip.MustParseAddr(client), Layer: rules.LayerDNS, Host: fmt.Sprintf("name-%d.example", i)}
		h.Observe(time.Unix(int64(i), 0), &f, rules.Decision{Action: rules.ActionReject, Rule: r})
	}
}

func TestHubOrderRingAndSubscribers(t *testing.T) {
	h := NewHub(HubConfig{Ring: 5})
	defer h.Close()
	sub, _ := h.Subscribe(100, 0)
	defer sub.Close()
	// A plain allow is not an event.
	h.Observe(time.Now(), &rules.Flow{Layer: rules.LayerDNS, Host: "x"}, rules.Decision{})
	observe(h, 8, "192.0.2.1")
	h.Flush()
	for i := range 8 {
		e := <-sub.C()
		if e.Seq != uint64(i+1) || e.Target != fmt.Sprintf("name-%d.example", i) || e.Outcome != "NXDOMAIN" || e.Rule != "lab.yaml:7" || e.Device != "192.0.2.1" {
			t.Fatalf("event %d = %+v", i, e)
		}
	}
	recent := h.Ring().Recent(Filter{}, 0)
	if len(recent) != 5 || recent[0].Seq != 4 || recent[4].Seq != 8 {
		t.Errorf("ring of 5 holds %d events, seqs %d..%d; want 4..8", len(recent), recent[0].Seq, recent[len(recent)-1].Seq)
	}
	if got := h.Ring().Recent(Filter{Device: "192.0.2.2"}, 0); len(got) != 0 {
		t.Errorf("filter by another device: %d events", len(got))
	}
	if got := h.Ring().Recent(Filter{Service: "infura"}, 2); len(got) != 2 || got[1].Seq != 8 {
		t.Errorf("filter by service, limit 2: %+v", got)
	}
	// A late subscriber catches up from the ring without gaps or repeats.
	late, past := h.Subscribe(10, 6)
	defer late.Close()
	if len(past) != 2 || past[0].Seq != 7 || past[1].Seq != 8 {
		t.Errorf("Subscribe after 6 replays %+v, want seqs 7, 8", past)
	}
	if d := h.Devices(); len(d) != 1 || d[0].Events != 8 || d[0].Blocked != 8 || d[0].Services["infura"] != 8 {
		t.Errorf("devices %+v", d)
	}
	if got := h.Decisions(rules.LayerDNS, rules.ActionReject); got != 8 {
		t.Errorf("Decisions(dns, reject) = %d, want 8", got)
	}
}

func TestHubNeverBlocks(t *testing.T) {
	h := NewHub(HubConfig{Queue: 4})
	defer h.Close()
	slow, _ := h.Subscribe(1, 0) // never read
	defer slow.Close()
	done := make(chan struct{})
	go func() {
		observe(h, 10000, "192.0.2.1")
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Observe blocked")
	}
	h.Flush()
	if h.Dropped()+uint64(len(h.Ring().Recent(Filter{}, 0))) == 0 || slow.Dropped() == 0 {
		t.Errorf("dropped %d, subscriber dropped %d", h.Dropped(), slow.Dropped())
	}
	if got := h.Decisions(rules.LayerDNS, rules.ActionReject); got != 10000 {
		t.Errorf("Decisions counts %d, want all 10000 (drops included)", got)
	}
}

func TestObserveAllocatesNothing(t *testing.T) {
	h := NewHub(HubConfig{Queue: 1})
	defer h.Close()
	r := testRule(rules.ActionReject, rules.Params{})
	f := rules.Flow{Client: netip.MustParseAddr("192.0.2.1"), Layer: rules.LayerDNS, Host: "mainnet.infura.io"}
	d := rules.Decision{Action: rules.ActionReject, Rule: r}
	now := time.Now()
	if n := testing.AllocsPerRun(1000, func() { h.Observe(now, &f, d) }); n != 0 {
		t.Errorf("Observe allocates %v times per call, want 0", n)
	}
}

func TestEventLogRotation(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.jsonl")
	l, err := OpenEventLog(path, 1000, 2)
	if err != nil {
		t.Fatal(err)
	}
	h := NewHub(HubConfig{Log: l})
	observe(h, 60, "192.0.2.1")
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	var seqs []uint64
	for _, name := range []string{path + ".2", path + ".1", path} {
		f, err := os.Open(name)
		if err != nil {
			t.Fatalf("after 60 events of ~200 bytes with max 1000 and keep 2: %v", err)
		}
		st, _ := f.Stat()
		if st.Size() > 1000 {
			t.Errorf("%s is %d bytes, over the 1000 limit", name, st.Size())
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			var e Event
			if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
				t.Fatalf("%s: line %q: %v", name, sc.Text(), err)
			}
			seqs = append(seqs, e.Seq)
		}
		f.Close()
	}
	if _, err := os.Stat(path + ".3"); err == nil {
		t.Errorf("%s.3 exists; keep 2 allows .1 and .2 only", path)
	}
	if len(seqs) == 0 || seqs[len(seqs)-1] != 60 {
		t.Fatalf("the newest file does not end with event 60: %v", seqs)
	}
	for i := 1; i < len(seqs); i++ {
		if seqs[i] != seqs[i-1]+1 {
			t.Fatalf("events across the files are not consecutive: %v", seqs)
		}
	}
}
