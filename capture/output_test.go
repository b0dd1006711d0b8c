package capture_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"strings"
	"testing"

	"golang.org/x/net/html"

	"github.com/chaos-unicorn/unicorn/capture"
	"github.com/chaos-unicorn/unicorn/rules"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func TestHTMLSelfContained(t *testing.T) {
	r := report(t, "rehearsal.pcap", capture.Options{Engine: engine(t), Side: capture.SideDevice})
	r.File = "rehearsal.pcap"
	var buf bytes.Buffer
	if err := r.WriteHTML(&buf); err != nil {
		t.Fatal(err)
	}
	page := buf.String()
	for _, bad := range []string{"http://", "https://", "<script src", "<link", "@import", "url("} {
		if strings.Contains(page, bad) {
			t.Errorf("page contains %q: it must load nothing", bad)
		}
	}
	doc, err := html.Parse(strings.NewReader(page))
	if err != nil {
		t.Fatal(err)
	}
	// The timeline: one row per device and service with attempts, one
	// circle per attempt, each with a title a tester can hover.
	var circles, svgs int
	var text strings.Builder
	var walk func(n *html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.ElementNode {
			switch n.Data {
			case "svg":
				svgs++
			case "circle":
				circles++
			}
		}
		if n.Type == html.TextNode {
			text.WriteString(n.Data)
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(doc)
	attempts := 0
	for _, d := range r.Devices {
		for _, g := range d.Services {
			attempts += len(g.Timeline)
		}
	}
	if svgs != 1 || circles != attempts || attempts == 0 {
		t.Errorf("timeline: %d svg, %d circles, want 1 and %d (one per attempt)", svgs, circles, attempts)
	}
	for _, want := range []string{"2 leak(s)", "api.etherscan.io", "handshake completed with a blocked name", "Device 192.0.2.10", "hard-coded", "1s 2s"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("page text lacks %q", want)
		}
	}
	// No leaks: the page says so.
	buf.Reset()
	if err := report(t, "rehearsal.pcap", capture.Options{}).WriteHTML(&buf); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(buf.String(), "leak(s)") {
		t.Error("a report without rules claims leaks")
	}
}

func TestJSONRoundTrip(t *testing.T) {
	r := report(t, "rehearsal.pcap", capture.Options{Engine: engine(t), Side: capture.SideDevice})
	var buf bytes.Buffer
	if err := r.WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	var got struct {
		Leaks   []map[string]any `json:"leaks"`
		Devices []struct {
			Addr     string `json:"addr"`
			Services []struct {
				Target  string    `json:"target"`
				Backoff []float64 `json:"backoff"`
			} `json:"services"`
		} `json:"devices"`
	}
	if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Leaks) != 2 || got.Devices[0].Addr != "192.0.2.10" {
		t.Fatalf("json: %d leaks, first device %s", len(got.Leaks), got.Devices[0].Addr)
	}
	for _, s := range got.Devices[0].Services {
		if s.Target == "infura" && (len(s.Backoff) != 2 || s.Backoff[0] != 1000 || s.Backoff[1] != 2000) {
			t.Errorf("infura back-off in JSON %v, want [1000 2000] (ms)", s.Backoff)
		}
	}
}

func TestDiscoverGolden(t *testing.T) {
	f, err := capture.Open("testdata/rehearsal.pcap")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	a, _ := capture.NewAnalyzer(capture.Options{})
	if err := a.ReadFrom(f); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := a.Discover().WriteYAML(&buf, "rehearsal.pcap", "discovered"); err != nil {
		t.Fatal(err)
	}
	const golden = "testdata/rehearsal.discover.yaml"
	if *update {
		if err := os.WriteFile(golden, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if buf.String() != string(want) {
		t.Errorf("discover output differs from %s (go test -run Discover -update to accept):\n%s", golden, buf.String())
	}
	// What it proposes loads, and attributes the capture back to the same
	// services.
	set, err := rules.Parse("discovered.yaml", buf.Bytes())
	if err != nil {
		t.Fatalf("the proposal does not load: %v", err)
	}
	if sc := set.Scenario("discovered"); sc == nil || !sc.Optional || len(sc.Rules) != 5 {
		t.Fatalf("scenario: %+v", sc)
	}
	eng, err := rules.NewEngine(set, []string{"discovered"})
	if err != nil {
		t.Fatal(err)
	}
	r := report(t, "rehearsal.pcap", capture.Options{Engine: eng})
	d := r.Devices[0]
	for _, target := range []string{"infura", "etherscan", "cryptocompare", "nodes-198-51-100-0", "nodes-203-0-113-0"} {
		service(t, d, target)
	}
}
