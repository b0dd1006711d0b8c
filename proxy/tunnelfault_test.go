package proxy_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/chaos-unicorn/unicorn/rules"
)

// tcpServer starts a TCP server on loopback that runs handle for each
// connection (closing it afterwards) and returns its address. The server
// and its connections are closed when t ends.
func tcpServer(t *testing.T, handle func(c net.Conn)) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				c.SetDeadline(time.Now().Add(30 * time.Second))
				handle(c)
			}()
		}
	}()
	return l.Addr().String()
}

// sourceServer sends n bytes on every connection, then closes it.
func sourceServer(t *testing.T, n int) string {
	return tcpServer(t, func(c net.Conn) {
		io.Copy(c, io.LimitReader(zeros{}, int64(n)))
	})
}

// echoServer sends back what it reads.
func echoServer(t *testing.T) string {
	return tcpServer(t, func(c net.Conn) { io.Copy(c, c) })
}

type zeros struct{}

func (zeros) Read(b []byte) (int, error) {
	clear(b)
	return len(b), nil
}

// tunnel opens a CONNECT tunnel through the proxy at proxyAddr to target
// and returns the connection, past the proxy's "200" head.
func tunnel(t *testing.T, proxyAddr, target string) net.Conn {
	t.Helper()
	c, br := rawConnectConn(t, proxyAddr, target, "")
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("CONNECT %s: %s", target, resp.Status)
	}
	return &readerConn{Conn: c, r: br}
}

type readerConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *readerConn) Read(b []byte) (int, error) { return c.r.Read(b) }

// only returns a decider that decides d for every flow.
func only(d rules.Decision) func(rules.Flow) rules.Decision {
	return func(rules.Flow) rules.Decision { return d }
}

func TestTunnelThrottle(t *testing.T) {
	const rate, size = 128 << 10, 256 << 10
	want := time.Duration(size) * time.Second / rate
	t.Run("down", func(t *testing.T) {
		src := sourceServer(t, size)
		w := newWorld(t, worldConfig{Decide: only(decision(rules.ActionThrottle, rules.Params{Rate: rate, Direction: rules.DirDown}))})
		c := tunnel(t, w.Addr, src)
		start := time.Now()
		n, err := io.Copy(io.Discard, c)
		if err != nil || n != size {
			t.Fatalf("read %d bytes, err %v; want %d", n, err, size)
		}
		took := time.Since(start)
		t.Logf("256 KiB down in %v: %.1f%% of the rate", took, 100*want.Seconds()/took.Seconds())
		within(t, "256 KiB at 128 KiB/s", took, want*9/10, want*11/10)
	})
	t.Run("up", func(t *testing.T) {
		got := make(chan time.Duration, 1)
		sink := tcpServer(t, func(c net.Conn) {
			buf := make([]byte, 64<<10)
			var total int
			var first time.Time
			for total < size {
				n, err := c.Read(buf)
				if total == 0 && n > 0 {
					first = time.Now()
				}
				total += n
				if err != nil {
					break
				}
			}
			got <- time.Since(first)
		})
		w := newWorld(t, worldConfig{Decide: only(decision(rules.ActionThrottle, rules.Params{Rate: rate, Direction: rules.DirUp}))})
		c := tunnel(t, w.Addr, sink)
		if _, err := io.Copy(c, io.LimitReader(zeros{}, size)); err != nil {
			t.Fatal(err)
		}
		// The first chunk arrives after one chunk's wait (1/20 s).
		within(t, "256 KiB up at 128 KiB/s", <-got, want*9/10-want/20, want*11/10)
	})
	t.Run("other-direction-untouched", func(t *testing.T) {
		src := sourceServer(t, 4<<20)
		w := newWorld(t, worldConfig{Decide: only(decision(rules.ActionThrottle, rules.Params{Rate: rate, Direction: rules.DirUp}))})
		c := tunnel(t, w.Addr, src)
		start := time.Now()
		n, _ := io.Copy(io.Discard, c)
		if n != 4<<20 {
			t.Fatalf("read %d bytes", n)
		}
		within(t, "4 MiB down, throttle up only", time.Since(start), 0, time.Second)
	})
}

func TestTunnelDelay(t *testing.T) {
	const lat = 300 * time.Millisecond
	t.Run("first_byte", func(t *testing.T) {
		src := sourceServer(t, 16)
		w := newWorld(t, worldConfig{Decide: only(decision(rules.ActionDelay, rules.Params{Latency: lat, DelayOn: rules.DelayOnFirstByte, Direction: rules.DirDown}))})
		start := time.Now()
		c := tunnel(t, w.Addr, src)
		within(t, "CONNECT answer (no delay on connect)", time.Since(start), 0, lat/2)
		var b [1]byte
		if _, err := io.ReadFull(c, b[:]); err != nil {
			t.Fatal(err)
		}
		within(t, "first byte", time.Since(start), lat, lat+250*time.Millisecond)
	})
	t.Run("chunk", func(t *testing.T) {
		echo := echoServer(t)
		w := newWorld(t, worldConfig{Decide: only(decision(rules.ActionDelay, rules.Params{Latency: 100 * time.Millisecond, DelayOn: rules.DelayOnChunk, Direction: rules.DirBoth}))})
		c := tunnel(t, w.Addr, echo)
		br := bufio.NewReader(c)
		for i := range 3 {
			start := time.Now()
			fmt.Fprintf(c, "ping %d\n", i)
			line, err := br.ReadString('\n')
			if err != nil || line != fmt.Sprintf("ping %d\n", i) {
				t.Fatalf("echo %d: %q, %v", i, line, err)
			}
			// Each way waits 100 ms.
			within(t, "round trip", time.Since(start), 200*time.Millisecond, 450*time.Millisecond)
		}
	})
	t.Run("connect", func(t *testing.T) {
		src := sourceServer(t, 16)
		w := newWorld(t, worldConfig{Decide: only(decision(rules.ActionDelay, rules.Params{Latency: lat}))})
		start := time.Now()
		c := tunnel(t, w.Addr, src)
		within(t, "CONNECT answer", time.Since(start), lat, lat+250*time.Millisecond)
		if n, _ := io.Copy(io.Discard, c); n != 16 {
			t.Fatalf("read %d bytes", n)
		}
	})
}

func TestTunnelCut(t *testing.T) {
	const after = 10000
	for _, c := range []struct {
		name    string
		mode    rules.CloseMode
		wantErr error
	}{{"close", rules.CloseFIN, nil}, {"rst", rules.CloseRST, syscall.ECONNRESET}} {
		t.Run("after_bytes/"+c.name, func(t *testing.T) {
			src := sourceServer(t, 1<<20)
			w := newWorld(t, worldConfig{Decide: only(decision(rules.ActionCut, rules.Params{AfterBytes: after, Direction: rules.DirDown, Close: c.mode}))})
			conn := tunnel(t, w.Addr, src)
			n, err := io.Copy(io.Discard, conn)
			if n != after {
				t.Errorf("client got %d bytes, want %d", n, after)
			}
			if c.wantErr == nil && err != nil || c.wantErr != nil && !errors.Is(err, c.wantErr) {
				t.Errorf("err = %v, want %v", err, c.wantErr)
			}
		})
	}
	t.Run("after_bytes/up", func(t *testing.T) {
		got := make(chan int, 1)
		sink := tcpServer(t, func(c net.Conn) {
			n, _ := io.Copy(io.Discard, c)
			got <- int(n)
		})
		w := newWorld(t, worldConfig{Decide: only(decision(rules.ActionCut, rules.Params{AfterBytes: after, Direction: rules.DirUp, Close: rules.CloseFIN}))})
		c := tunnel(t, w.Addr, sink)
		io.Copy(c, io.LimitReader(zeros{}, 1<<20))
		if n := <-got; n != after {
			t.Errorf("upstream got %d bytes, want %d", n, after)
		}
	})
	t.Run("after", func(t *testing.T) {
		echo := echoServer(t)
		w := newWorld(t, worldConfig{Decide: only(decision(rules.ActionCut, rules.Params{After: 300 * time.Millisecond, Direction: rules.DirBoth, Close: rules.CloseFIN}))})
		c := tunnel(t, w.Addr, echo)
		start := time.Now()
		fmt.Fprintf(c, "hi\n")
		b := make([]byte, 3)
		if _, err := io.ReadFull(c, b); err != nil || string(b) != "hi\n" {
			t.Fatalf("echo: %q %v", b, err)
		}
		if _, err := c.Read(b); err == nil {
			t.Fatal("read after the cut succeeded")
		}
		within(t, "cut", time.Since(start), 300*time.Millisecond, 800*time.Millisecond)
	})
}

func TestTunnelStall(t *testing.T) {
	src := sourceServer(t, 1<<20)
	w := newWorld(t, worldConfig{
		Decide:    only(decision(rules.ActionStall, rules.Params{AfterBytes: 4096, Direction: rules.DirDown})),
		Blackhole: 1500 * time.Millisecond,
	})
	c := tunnel(t, w.Addr, src)
	start := time.Now()
	buf := make([]byte, 4096)
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatal(err)
	}
	// Then silence, on a socket that stays open ...
	c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	if n, err := c.Read(buf); !errors.Is(err, context.DeadlineExceeded) && !isTimeout(err) {
		t.Fatalf("after the stall: %d bytes, err %v; want a timeout on an open socket", n, err)
	}
	// ... until the hold ends.
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(buf); err == nil {
		t.Fatalf("read %d bytes after the stall", n)
	}
	within(t, "stall held", time.Since(start), 1400*time.Millisecond, 3*time.Second)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestTunnelSlowClose(t *testing.T) {
	bye := tcpServer(t, func(c net.Conn) { io.WriteString(c, "bye\n") })
	w := newWorld(t, worldConfig{Decide: only(decision(rules.ActionSlowClose, rules.Params{Latency: 400 * time.Millisecond, Direction: rules.DirDown}))})
	c := tunnel(t, w.Addr, bye)
	start := time.Now()
	b := make([]byte, 4)
	if _, err := io.ReadFull(c, b); err != nil || string(b) != "bye\n" {
		t.Fatalf("got %q, %v", b, err)
	}
	within(t, "data", time.Since(start), 0, 200*time.Millisecond)
	if n, err := c.Read(b); err != io.EOF {
		t.Fatalf("got %d bytes, %v; want EOF", n, err)
	}
	within(t, "close", time.Since(start), 400*time.Millisecond, 900*time.Millisecond)
}

func TestTunnelTLSReset(t *testing.T) {
	up := newUpstream(t, true)
	reset := func(mode rules.CloseMode, names ...string) func(rules.Flow) rules.Decision {
		return func(f rules.Flow) rules.Decision {
			for _, n := range names {
				if f.Host == n {
					return decision(rules.ActionTLSReset, rules.Params{Close: mode})
				}
			}
			return rules.Decision{}
		}
	}
	t.Run("rst", func(t *testing.T) {
		w := newWorld(t, worldConfig{Decide: reset(rules.CloseRST, "api.example.test", "example.com"), Hosts: testHosts})
		_, err := w.client(5*time.Second, up.Roots(), "example.com").Get(up.URLFor("api.example.test"))
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("err = %v, want connection reset", err)
		}
		if up.Hits() != 0 {
			t.Errorf("upstream got %d requests", up.Hits())
		}
		var tlsRecs int
		for _, f := range w.Rules.Flows() {
			if f.Layer == rules.LayerTLS && f.Host == "example.com" {
				tlsRecs++
			}
		}
		if tlsRecs != 1 {
			t.Errorf("asked %d times at the TLS layer about the SNI", tlsRecs)
		}
	})
	t.Run("alert", func(t *testing.T) {
		w := newWorld(t, worldConfig{Decide: reset(rules.CloseAlert, "api.example.test", "example.com"), Hosts: testHosts})
		_, err := w.client(5*time.Second, up.Roots(), "example.com").Get(up.URLFor("api.example.test"))
		if err == nil || !strings.Contains(err.Error(), "remote error: tls: handshake failure") {
			t.Fatalf("err = %v, want a handshake_failure alert", err)
		}
	})
}

// TestTunnelTLSResetBySNI checks the decision at the TLS layer: the
// CONNECT's name is held by tls_reset, but the SNI is let through.
func TestTunnelTLSResetBySNI(t *testing.T) {
	up := newUpstream(t, true)
	var changed func()
	w := newWorld(t, worldConfig{Hosts: testHosts, Decide: func(f rules.Flow) rules.Decision {
		if f.Layer == rules.LayerHTTP && f.Host == "api.example.test" {
			return decision(rules.ActionTLSReset, rules.Params{Close: rules.CloseRST})
		}
		return rules.Decision{}
	}, OnChange: func(fn func()) func() { changed = fn; return func() {} }})
	c := w.client(5*time.Second, up.Roots(), "example.com")
	for i := range 2 {
		resp, err := c.Get(up.URLFor("api.example.test"))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !bytes.Equal(b, []byte(Body)) {
			t.Fatalf("got %q", b)
		}
		if i == 0 {
			// A rule change re-decides the tunnel by its SNI, which no
			// rule holds: it stays open and carries the next request.
			changed()
			time.Sleep(100 * time.Millisecond)
		}
	}
	if n := len(w.Logs.Find("live tunnel: cut by a rule change")); n != 0 {
		t.Errorf("the SNI-relayed tunnel was cut %d times", n)
	}
	if up.Hits() != 2 {
		t.Errorf("upstream served %d requests, want 2", up.Hits())
	}
}

// TestTunnelTLSResetNotTLS: a tunnel a tls_reset rule holds that carries
// no TLS at all is closed, and the proxy lives on.
func TestTunnelTLSResetNotTLS(t *testing.T) {
	w := newWorld(t, worldConfig{Decide: only(decision(rules.ActionTLSReset, rules.Params{Close: rules.CloseRST}))})
	for _, junk := range []string{"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "\x16\x03\x01\xff\xff", "\x16\x03\x01\x00\x04\x01\x00\x00\x00"} {
		c := tunnel(t, w.Addr, "127.0.0.1:9")
		start := time.Now()
		io.WriteString(c, junk)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, err := c.Read(make([]byte, 64)); err == nil || isTimeout(err) {
			t.Fatalf("%q: read %d bytes, %v; want the tunnel closed", junk, n, err)
		}
		within(t, "close", time.Since(start), 0, time.Second)
	}
}

// TestCloseEndsFaultWaits: Close ends a stalled tunnel and a throttled one
// at once, although their faults would wait for a minute.
func TestCloseEndsFaultWaits(t *testing.T) {
	src := sourceServer(t, 1<<20)
	var n atomic.Int32
	w := newWorld(t, worldConfig{
		Decide: func(rules.Flow) rules.Decision {
			if n.Add(1)%2 == 1 {
				return decision(rules.ActionStall, rules.Params{AfterBytes: 100, Direction: rules.DirDown})
			}
			return decision(rules.ActionThrottle, rules.Params{Rate: 10, Direction: rules.DirDown})
		},
		Blackhole: time.Minute,
	})
	stalled := tunnel(t, w.Addr, src)
	throttled := tunnel(t, w.Addr, src)
	io.ReadFull(stalled, make([]byte, 100))
	io.ReadFull(throttled, make([]byte, 1))
	start := time.Now()
	if err := w.Proxy.Close(); err != nil {
		t.Fatal(err)
	}
	within(t, "Close", time.Since(start), 0, time.Second)
	for _, c := range []net.Conn{stalled, throttled} {
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := io.Copy(io.Discard, c); isTimeout(err) {
			t.Errorf("a tunnel is still open after Close")
		}
	}
}
