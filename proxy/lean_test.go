package proxy_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/url"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chaos-unicorn/unicorn/proxy"
	"github.com/chaos-unicorn/unicorn/rules"
)

// countedServer is a fake origin that counts the connections it accepted.
type countedServer struct {
	*httptest.Server
	conns atomic.Int64
}

func newCounted(t *testing.T, h http.HandlerFunc) *countedServer {
	s := &countedServer{Server: httptest.NewUnstartedServer(h)}
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			s.conns.Add(1)
		}
	}
	s.Start()
	t.Cleanup(s.Close)
	return s
}

// oneConnClient is a client through w's proxy that keeps at most one
// connection, and a counter of the proxy connections it opened.
func oneConnClient(w *world) (*http.Client, *atomic.Int64) {
	var dials atomic.Int64
	d := &net.Dialer{}
	tr := &http.Transport{
		Proxy:           http.ProxyURL(w.URL),
		MaxConnsPerHost: 1,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dials.Add(1)
			return d.DialContext(ctx, network, addr)
		},
	}
	w.t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}, &dials
}

// do sends req with cl and returns the response with its body read.
func do(t *testing.T, cl *http.Client, req *http.Request) (*http.Response, string) {
	t.Helper()
	resp, err := cl.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: body: %v", req.Method, req.URL, err)
	}
	return resp, string(b)
}

func get(t *testing.T, cl *http.Client, u string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	return do(t, cl, req)
}

func hello(w http.ResponseWriter, r *http.Request) { io.WriteString(w, Body) }

func TestLeanKeepAliveReusesUpstream(t *testing.T) {
	up := newCounted(t, hello)
	w := newWorld(t, worldConfig{})
	cl, dials := oneConnClient(w)
	for i := range 50 {
		resp, body := get(t, cl, up.URL+fmt.Sprintf("/%d", i))
		if resp.StatusCode != 200 || body != Body {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, body)
		}
	}
	if dials.Load() != 1 || up.conns.Load() != 1 {
		t.Errorf("%d client connections, %d upstream connections; want 1 and 1", dials.Load(), up.conns.Load())
	}
	if n := len(w.Rules.Flows()); n != 50 {
		t.Errorf("%d questions, want one per request", n)
	}
}

func TestLeanRuleChange(t *testing.T) {
	up := newCounted(t, hello)
	var reject atomic.Bool
	w := newWorld(t, worldConfig{Decide: func(rules.Flow) rules.Decision {
		if reject.Load() {
			return decision(rules.ActionReject, rules.Params{})
		}
		return rules.Decision{}
	}})
	cl, dials := oneConnClient(w)
	for i, rej := range []bool{false, true, false, true, true, false} {
		reject.Store(rej)
		resp, body := get(t, cl, up.URL+"/")
		switch {
		case rej && (resp.StatusCode != 403 || !strings.Contains(body, "unicorn refused 127.0.0.1") ||
			resp.Header.Get(proxy.HeaderRule) != testRef || resp.Header.Get(proxy.HeaderAction) != "reject"):
			t.Errorf("request %d: %d %v %q", i, resp.StatusCode, resp.Header, body)
		case !rej && (resp.StatusCode != 200 || body != Body):
			t.Errorf("request %d: %d %q", i, resp.StatusCode, body)
		}
	}
	if dials.Load() != 1 {
		t.Errorf("%d client connections, want 1", dials.Load())
	}
	if n := len(w.Rules.Flows()); n != 6 {
		t.Errorf("%d questions, want one per request", n)
	}
	if n := len(w.Logs.Find("proxy decision")); n != 3 {
		t.Errorf("%d decision logs, want 3", n)
	}
}

func TestLeanTargetChange(t *testing.T) {
	a := newCounted(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "a") })
	b := newCounted(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "b") })
	w := newWorld(t, worldConfig{})
	cl, dials := oneConnClient(w)
	for i, s := range []*countedServer{a, a, b, b, a} {
		want := "a"
		if s == b {
			want = "b"
		}
		if resp, body := get(t, cl, s.URL+"/"); resp.StatusCode != 200 || body != want {
			t.Errorf("request %d: %d %q, want %q", i, resp.StatusCode, body, want)
		}
	}
	if dials.Load() != 1 || a.conns.Load() != 2 || b.conns.Load() != 1 {
		t.Errorf("client conns %d, a conns %d, b conns %d; want 1, 2, 1", dials.Load(), a.conns.Load(), b.conns.Load())
	}
}

func TestLeanBodies(t *testing.T) {
	up := newCounted(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Got-TE", strings.Join(r.TransferEncoding, ","))
		w.Header().Set("X-Got-Len", fmt.Sprint(r.ContentLength))
		switch r.URL.Path {
		case "/chunked":
			io.WriteString(w, "part1:")
			w.(http.Flusher).Flush()
			w.Write(b)
		case "/head":
			w.Header().Set("Content-Length", "20")
		default:
			w.Write(b)
		}
	})
	w := newWorld(t, worldConfig{})
	cl, dials := oneConnClient(w)
	get(t, cl, up.URL+"/") // starts the lean session

	req, _ := http.NewRequest(http.MethodPost, up.URL+"/", strings.NewReader("sized body"))
	if resp, body := do(t, cl, req); body != "sized body" || resp.Header.Get("X-Got-Len") != "10" {
		t.Errorf("sized: %q %v", body, resp.Header)
	}
	// A body of unknown length goes chunked.
	req, _ = http.NewRequest(http.MethodPost, up.URL+"/chunked", io.MultiReader(strings.NewReader("chunked "), strings.NewReader("body")))
	if resp, body := do(t, cl, req); body != "part1:chunked body" || resp.Header.Get("X-Got-TE") != "chunked" {
		t.Errorf("chunked request: %q %v", body, resp.Header)
	}
	// A flushed response goes chunked and stays so.
	if resp, body := get(t, cl, up.URL+"/chunked"); body != "part1:" || len(resp.TransferEncoding) == 0 {
		t.Errorf("chunked response: %q %v %v", body, resp.Header, resp.TransferEncoding)
	}
	req, _ = http.NewRequest(http.MethodHead, up.URL+"/head", nil)
	if resp, body := do(t, cl, req); resp.StatusCode != 200 || body != "" || resp.ContentLength != 20 {
		t.Errorf("HEAD: %d %q %d", resp.StatusCode, body, resp.ContentLength)
	}
	if resp, body := get(t, cl, up.URL+"/"); resp.StatusCode != 200 || body != "" {
		t.Errorf("after HEAD: %d %q", resp.StatusCode, body)
	}
	if dials.Load() != 1 {
		t.Errorf("%d client connections, want 1", dials.Load())
	}
}

func TestLeanConnectionClose(t *testing.T) {
	up := newCounted(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/close" {
			w.Header().Set("Connection", "close")
		}
		io.WriteString(w, Body)
	})
	w := newWorld(t, worldConfig{})
	cl, dials := oneConnClient(w)
	get(t, cl, up.URL+"/")
	if resp, body := get(t, cl, up.URL+"/close"); !resp.Close || body != Body {
		t.Errorf("upstream close: close %v, %q", resp.Close, body)
	}
	if resp, body := get(t, cl, up.URL+"/"); resp.StatusCode != 200 || body != Body {
		t.Errorf("after upstream close: %d %q", resp.StatusCode, body)
	}
	req, _ := http.NewRequest(http.MethodGet, up.URL+"/", nil)
	req.Close = true
	if resp, body := do(t, cl, req); !resp.Close || body != Body {
		t.Errorf("client close: close %v, %q", resp.Close, body)
	}
	get(t, cl, up.URL+"/")
	if dials.Load() != 3 {
		t.Errorf("%d client connections, want 3", dials.Load())
	}
	if up.conns.Load() != 3 {
		t.Errorf("%d upstream connections, want 3", up.conns.Load())
	}
}

func TestLeanMalformedSecondRequest(t *testing.T) {
	up := newCounted(t, hello)
	w := newWorld(t, worldConfig{})
	c, err := net.Dial("tcp", w.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	host := up.Listener.Addr().String()
	fmt.Fprintf(c, "GET http://%s/ HTTP/1.1\r\nHost: %s\r\n\r\n", host, host)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("first: %v %v", resp, err)
	}
	io.Copy(io.Discard, resp.Body)
	io.WriteString(c, "GARBAGE\r\n\r\n")
	if _, err := io.ReadAll(br); err != nil {
		t.Errorf("connection not closed cleanly: %v", err)
	}
	if resp, body := w.get(up.URL + "/"); resp.StatusCode != 200 || body != Body {
		t.Errorf("next client: %d %q", resp.StatusCode, body)
	}
}

func TestLeanBlackholeAfterAllow(t *testing.T) {
	up := newCounted(t, hello)
	var hole atomic.Bool
	w := newWorld(t, worldConfig{Blackhole: 100 * time.Millisecond, Decide: func(rules.Flow) rules.Decision {
		if hole.Load() {
			return decision(rules.ActionBlackhole, rules.Params{})
		}
		return rules.Decision{}
	}})
	cl, _ := oneConnClient(w)
	get(t, cl, up.URL+"/")
	hole.Store(true)
	start := time.Now()
	if _, err := cl.Get(up.URL + "/"); err == nil {
		t.Errorf("blackholed request got an answer")
	}
	within(t, "hold", time.Since(start), 100*time.Millisecond, 5*time.Second)
}

func TestLeanCloseWithSlowUpstream(t *testing.T) {
	before := runtime.NumGoroutine()
	release := make(chan struct{})
	got := make(chan struct{}, 1)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			got <- struct{}{}
			select {
			case <-release:
			case <-time.After(10 * time.Second):
			}
		}
		io.WriteString(w, Body)
	}))
	p, err := proxy.New(proxy.Config{
		Decider: rules.DeciderFunc(func(rules.Flow) rules.Decision { return rules.Decision{} }),
		Logger:  discardLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	served := make(chan error, 1)
	go func() { served <- p.Serve(l) }()
	tr := &http.Transport{Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: l.Addr().String()})}
	cl := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	var reused atomic.Bool
	ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
		GotConn: func(ci httptrace.GotConnInfo) { reused.Store(ci.Reused) },
	})
	get(t, cl, up.URL+"/")
	slowErr := make(chan error, 1)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, up.URL+"/slow", nil)
		resp, err := cl.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		slowErr <- err
	}()
	<-got
	start := time.Now()
	p.Close()
	if err := <-served; err != nil {
		t.Errorf("Serve: %v", err)
	}
	if err := <-slowErr; err == nil {
		t.Errorf("slow request answered after Close")
	}
	within(t, "Close", time.Since(start), 0, 2*time.Second)
	if !reused.Load() {
		t.Errorf("slow request did not reuse the lean session")
	}
	close(release)
	tr.CloseIdleConnections()
	up.Close()
	var now int
	deadline := time.Now().Add(5 * time.Second)
	for now = runtime.NumGoroutine(); now > before && time.Now().Before(deadline); now = runtime.NumGoroutine() {
		time.Sleep(20 * time.Millisecond)
	}
	if now > before {
		buf := make([]byte, 1<<20)
		t.Fatalf("%d goroutines before, %d after:\n%s", before, now, buf[:runtime.Stack(buf, true)])
	}
}

func TestLeanHandsBackErrors(t *testing.T) {
	up := newCounted(t, hello)
	w := newWorld(t, worldConfig{Hosts: testHosts, Decide: func(f rules.Flow) rules.Decision {
		if f.Host == "api.example.test" {
			return decision(rules.ActionDelay, rules.Params{Latency: 100 * time.Millisecond})
		}
		return rules.Decision{}
	}})
	cl, dials := oneConnClient(w)
	port := up.Listener.Addr().(*net.TCPAddr).Port
	get(t, cl, up.URL+"/")
	if resp, body := get(t, cl, "http://nowhere.example.test/"); resp.StatusCode != http.StatusBadGateway || !strings.Contains(body, "nowhere.example.test") {
		t.Errorf("unresolvable: %d %q", resp.StatusCode, body)
	}
	start := time.Now()
	if resp, body := get(t, cl, fmt.Sprintf("http://api.example.test:%d/", port)); resp.StatusCode != 200 || body != Body {
		t.Errorf("delayed: %d %q", resp.StatusCode, body)
	}
	within(t, "delayed request", time.Since(start), 100*time.Millisecond, 2*time.Second)
	start = time.Now()
	if resp, body := get(t, cl, fmt.Sprintf("http://127.0.0.1:%d/", port)); resp.StatusCode != 200 || body != Body {
		t.Errorf("literal: %d %q", resp.StatusCode, body)
	}
	within(t, "undelayed request", time.Since(start), 0, 90*time.Millisecond)
	if dials.Load() != 1 {
		t.Errorf("%d client connections, want 1", dials.Load())
	}
	if n := len(w.Logs.Find("proxy error")); n != 1 {
		t.Errorf("%d error logs, want 1", n)
	}
}

// TestLeanNeverResendsAPost: a request the upstream took and dropped
// without answering is answered 502 and never sent again, unless its
// method may be repeated.
func TestLeanNeverResendsAPost(t *testing.T) {
	var posts, gets atomic.Int64
	up := newCounted(t, func(rw http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && gets.Add(1) == 1 {
			io.WriteString(rw, Body)
			return
		}
		if r.Method == http.MethodPost {
			posts.Add(1)
		}
		c, _, err := http.NewResponseController(rw).Hijack() // drop it unanswered
		if err == nil {
			c.Close()
		}
	})
	w := newWorld(t, worldConfig{})
	cl, _ := oneConnClient(w)
	if resp, body := get(t, cl, up.URL+"/first"); resp.StatusCode != 200 || body != Body {
		t.Fatalf("first GET: %d %q", resp.StatusCode, body)
	}
	req, _ := http.NewRequest(http.MethodPost, up.URL+"/pay", http.NoBody)
	resp, err := cl.Do(req)
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadGateway {
			t.Errorf("POST dropped by the upstream: %d, want 502", resp.StatusCode)
		}
	}
	if n := posts.Load(); n != 1 {
		t.Errorf("the upstream got the POST %d times, want once", n)
	}
}
