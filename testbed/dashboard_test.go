package testbed

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"image/png"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/miekg/dns"
)

// TestDashboardInChromium loads the dashboard in headless Chromium, driven
// over the DevTools protocol like a user: it types a duration, clicks a
// scenario's switch with the mouse and checks the API sees the change; it
// sees a blocked request appear in the live event list and a broken rule
// file's errors appear on the page. The screenshot is kept, at a path the
// test prints.
//
// It runs when UNICORN_BROWSER_TESTS=1 or CI=true, like the onboarding page test.
func TestDashboardInChromium(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping the headless Chromium test")
	}
	if os.Getenv("UNICORN_BROWSER_TESTS") != "1" && os.Getenv("CI") != "true" {
		t.Skip("set UNICORN_BROWSER_TESTS=1 (or CI=true) to drive the dashboard in headless Chromium (apt-get install chromium; .ci/run installs it)")
	}
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("chromium is not on PATH (UNICORN_BROWSER_TESTS=1 or CI=true asks for the browser test): apt-get install -y --no-install-recommends chromium, which .ci/run does")
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "lab.yaml")
	if err := os.WriteFile(file, []byte("scenario: outage\nrules:\n  - {domains: [wallet.example], action: reject}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	slow := filepath.Join(dir, "slow.yaml")
	if err := os.WriteFile(slow, []byte("scenario: slow\noptional: true\nrules:\n  - {domains: [slow.example], action: delay, latency: 1s}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	u := Start(t, "--rules", file, "--rules", slow)
	base := "http://" + u.Control

	b := startBrowser(t, chromium)
	b.navigate(base + "/")
	b.waitJS(`document.getElementById("switch-slow") !== null && document.getElementById("state-outage") !== null`)

	// Type a duration, then click the switch of "slow".
	b.click("for-slow")
	b.call("Input.insertText", map[string]any{"text": "10m"})
	b.click("switch-slow")
	var sc struct {
		Scenarios []struct {
			Name     string
			On       bool
			RevertAt time.Time `json:"revert_at"`
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		sc.Scenarios = nil // absent fields must not keep old values
		getJSON(t, base+"/api/scenarios", &sc)
		if sc.Scenarios[1].On || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if s := sc.Scenarios[1]; s.Name != "slow" || !s.On || time.Until(s.RevertAt) < 9*time.Minute {
		t.Errorf("after clicking slow's switch with 10m typed: %+v, want slow on with a revert in 10 minutes", s)
	}
	b.waitJS(`document.getElementById("state-slow").textContent.includes("reverts at")`)

	// A blocked request shows in the live list.
	m := new(dns.Msg)
	m.SetQuestion("wallet.example.", dns.TypeA)
	if _, _, err := (&dns.Client{Timeout: 3 * time.Second}).Exchange(m, u.DNS); err != nil {
		t.Fatal(err)
	}
	b.waitJS(`document.querySelector("#events tbody").textContent.includes("wallet.example")`)
	// Filtering by another device hides it.
	b.click("f-device")
	b.call("Input.insertText", map[string]any{"text": "192.0.2.77"})
	b.waitJS(`!document.querySelector("#events tbody").textContent.includes("wallet.example")`)

	// A broken rule file: its error on the page.
	if err := os.WriteFile(file, []byte("scenario: outage\nrules:\n  - {domains: [wallet.example], action: blakhole}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	b.waitJS(`!document.getElementById("reload-error").hidden && document.getElementById("reload-errors").textContent.includes("blakhole")`)

	// Click slow's switch off again: the API sees it.
	b.click("switch-slow")
	deadline = time.Now().Add(5 * time.Second)
	for {
		sc.Scenarios = nil // absent fields must not keep old values
		getJSON(t, base+"/api/scenarios", &sc)
		if !sc.Scenarios[1].On || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if s := sc.Scenarios[1]; s.On || !s.RevertAt.IsZero() {
		t.Errorf("after clicking slow's switch again: %+v, want off for good (the duration times switches on)", s)
	}

	// Clear the device filter: the screenshot shows the event.
	b.eval(`(() => { const e = document.getElementById("f-device"); e.value = ""; e.dispatchEvent(new Event("input")); })()`)
	b.waitJS(`document.querySelector("#events tbody").textContent.includes("wallet.example")`)
	shot := b.screenshot()
	img, err := png.Decode(bytes.NewReader(shot))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	keep := filepath.Join(os.TempDir(), fmt.Sprintf("unicorn-dashboard-%d.png", os.Getpid()))
	if err := os.WriteFile(keep, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("dashboard screenshot kept at %s", keep)
	dark, light, _ := shades(img)
	total := img.Bounds().Dx() * img.Bounds().Dy()
	if light < total/2 || dark < total/300 {
		t.Errorf("the screenshot does not look like a page with text: %d dark, %d light of %d pixels", dark, light, total)
	}
}

func getJSON(t *testing.T, url string, out any) {
	t.Helper()
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		t.Fatalf("%s: %v", url, err)
	}
}

// browser is one headless Chromium driven over the DevTools protocol, on
// one page.
type browser struct {
	t    *testing.T
	ctx  context.Context
	conn *websocket.Conn
	mu   sync.Mutex
	next int
}

// startBrowser starts chromium with a DevTools port and connects to its
// page. Chromium is killed, by its process group, when t ends.
func startBrowser(t *testing.T, chromium string) *browser {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), browserTimeout)
	t.Cleanup(cancel)
	cmd := exec.Command(chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
		"--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic", "--no-proxy-server",
		"--user-data-dir="+t.TempDir(), "--window-size=1200,1400", "--remote-debugging-address=127.0.0.1",
		"--remote-debugging-port=0", "about:blank")
	cmd.Env = cleanEnv()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	exited := make(chan struct{})
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	})
	ws := make(chan string, 1)
	var log bytes.Buffer
	var logMu sync.Mutex
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			logMu.Lock()
			log.WriteString(line + "\n")
			logMu.Unlock()
			if u, ok := strings.CutPrefix(line, "DevTools listening on "); ok {
				select {
				case ws <- u:
				default:
				}
			}
		}
		io.Copy(io.Discard, stderr)
		cmd.Wait()
		close(exited)
	}()
	var browserWS string
	select {
	case browserWS = <-ws:
	case <-exited:
		t.Fatalf("chromium exited before its DevTools port was up:\n%s", log.String())
	case <-ctx.Done():
		t.Fatalf("chromium printed no DevTools address within %v", browserTimeout)
	}
	// The page target: /json/list on the same host:port.
	hostPort := strings.TrimPrefix(browserWS, "ws://")
	hostPort = hostPort[:strings.IndexByte(hostPort, '/')]
	var targets []struct{ Type, WebSocketDebuggerURL string }
	getJSON(t, "http://"+hostPort+"/json/list", &targets)
	page := ""
	for _, tg := range targets {
		if tg.Type == "page" {
			page = tg.WebSocketDebuggerURL
			break
		}
	}
	if page == "" {
		t.Fatalf("chromium has no page target: %+v", targets)
	}
	conn, _, err := websocket.Dial(ctx, page, nil)
	if err != nil {
		t.Fatalf("DevTools %s: %v", page, err)
	}
	conn.SetReadLimit(64 << 20) // screenshots
	t.Cleanup(func() { conn.CloseNow() })
	return &browser{t: t, ctx: ctx, conn: conn}
}

// call sends a DevTools command and returns its result, skipping the
// events that come meanwhile.
func (b *browser) call(method string, params map[string]any) json.RawMessage {
	b.t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	b.next++
	id := b.next
	msg, _ := json.Marshal(map[string]any{"id": id, "method": method, "params": params})
	if err := b.conn.Write(b.ctx, websocket.MessageText, msg); err != nil {
		b.t.Fatalf("DevTools %s: %v", method, err)
	}
	for {
		_, data, err := b.conn.Read(b.ctx)
		if err != nil {
			b.t.Fatalf("DevTools %s: %v", method, err)
		}
		var r struct {
			ID     int
			Result json.RawMessage
			Error  *struct{ Message string }
		}
		if json.Unmarshal(data, &r) != nil || r.ID != id {
			continue
		}
		if r.Error != nil {
			b.t.Fatalf("DevTools %s: %s", method, r.Error.Message)
		}
		return r.Result
	}
}

func (b *browser) navigate(url string) {
	b.t.Helper()
	b.call("Page.navigate", map[string]any{"url": url})
}

// eval evaluates a JavaScript expression in the page and returns its value.
func (b *browser) eval(expr string) json.RawMessage {
	b.t.Helper()
	var r struct {
		Result struct {
			Value json.RawMessage
		}
		ExceptionDetails *struct{ Text string }
	}
	json.Unmarshal(b.call("Runtime.evaluate", map[string]any{"expression": expr, "returnByValue": true}), &r)
	if r.ExceptionDetails != nil {
		return nil
	}
	return r.Result.Value
}

// waitJS waits, at most 10 s, for a JavaScript condition to be true.
func (b *browser) waitJS(cond string) {
	b.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if string(b.eval("!!("+cond+")")) == "true" {
			return
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("the dashboard did not get to %s within 10 s; page text:\n%s", cond, b.eval("document.body.innerText"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// click scrolls the element with id into view and clicks its middle with
// the mouse.
func (b *browser) click(id string) {
	b.t.Helper()
	var p struct{ X, Y float64 }
	v := b.eval(fmt.Sprintf(`(() => { const e = document.getElementById(%q); e.scrollIntoView({block: "center"});
		const r = e.getBoundingClientRect(); return {x: r.x + r.width/2, y: r.y + r.height/2}; })()`, id))
	if json.Unmarshal(v, &p) != nil {
		b.t.Fatalf("no element #%s on the dashboard", id)
	}
	for _, typ := range []string{"mousePressed", "mouseReleased"} {
		b.call("Input.dispatchMouseEvent", map[string]any{"type": typ, "x": p.X, "y": p.Y, "button": "left", "clickCount": 1})
	}
}

func (b *browser) screenshot() []byte {
	b.t.Helper()
	var r struct{ Data string }
	json.Unmarshal(b.call("Page.captureScreenshot", map[string]any{"format": "png"}), &r)
	png, err := base64.StdEncoding.DecodeString(r.Data)
	if err != nil {
		b.t.Fatalf("screenshot: %v", err)
	}
	return png
}
