package proxy_test

import (
	"bufio"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"testing"

	"github.com/chaos-unicorn/unicorn/proxy"
	"github.com/chaos-unicorn/unicorn/proxy/proxytest"
	"github.com/chaos-unicorn/unicorn/rules"
	"github.com/elazarl/goproxy"
)

// benchProxy starts an allow-everything proxy on 127.0.0.1:0 that resolves
// names with the fake DNS server (hosts) and returns its address.
func benchProxy(b *testing.B, hosts map[string][]netip.Addr) string {
	p, err := proxy.New(proxy.Config{
		Decider:  rules.DeciderFunc(func(rules.Flow) rules.Decision { return rules.Decision{} }),
		Resolver: proxytest.NewResolver(b, hosts),
		Logger:   discardLogger(),
	})
	if err != nil {
		b.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- p.Serve(l) }()
	b.Cleanup(func() { p.Close(); <-served })
	return l.Addr().String()
}

// goproxyPeer starts a stock goproxy on 127.0.0.1:0, the peer the
// benchmarks compare with, with its transport's idle pool per host raised
// to 256 when tuned, and returns its address.
func goproxyPeer(b *testing.B, tuned bool) string {
	gp := goproxy.NewProxyHttpServer()
	gp.Logger = log.New(io.Discard, "", 0)
	if tuned {
		gp.Tr.MaxIdleConnsPerHost = 256
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{Handler: gp}
	served := make(chan struct{})
	go func() { defer close(served); srv.Serve(l) }()
	b.Cleanup(func() { srv.Close(); <-served })
	return l.Addr().String()
}

// newSink starts a TCP server that reads and drops everything and, for
// each connection, sends how many bytes it read on the returned channel.
func newSink(b *testing.B) (string, <-chan int64) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	counts := make(chan int64, 16)
	done := make(chan struct{})
	b.Cleanup(func() { l.Close(); <-done })
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 1<<20)
				var n int64
				for {
					k, err := c.Read(buf)
					n += int64(k)
					if err != nil {
						counts <- n
						return
					}
				}
			}()
		}
	}()
	return l.Addr().String(), counts
}

// pump writes 256 KiB per iteration to c, then half-closes it and waits
// until the sink has read every byte.
func pump(b *testing.B, c *net.TCPConn, counts <-chan int64) {
	buf := make([]byte, 256<<10)
	b.SetBytes(int64(len(buf)))
	var sent int64
	for b.Loop() {
		n, err := c.Write(buf)
		sent += int64(n)
		if err != nil {
			b.Fatal(err)
		}
	}
	c.CloseWrite()
	if got := <-counts; got != sent {
		b.Fatalf("sink read %d of %d bytes", got, sent)
	}
	c.Close()
}

// BenchmarkConnectRaw compares bytes pushed through a CONNECT tunnel with
// bytes pushed straight to the same loopback sink; MB/s of the two give
// the relay's ratio.
func BenchmarkConnectRaw(b *testing.B) {
	sink, counts := newSink(b)
	proxyAddr := benchProxy(b, nil)
	b.Run("direct", func(b *testing.B) {
		c, err := net.Dial("tcp", sink)
		if err != nil {
			b.Fatal(err)
		}
		pump(b, c.(*net.TCPConn), counts)
	})
	for _, c := range []struct{ name, addr string }{
		{"proxy", proxyAddr},
		{"goproxy", goproxyPeer(b, false)},
	} {
		b.Run(c.name, func(b *testing.B) { pumpConnect(b, c.addr, sink, counts) })
	}
}

// pumpConnect opens a CONNECT tunnel to sink through proxyAddr and pumps
// bytes through it.
func pumpConnect(b *testing.B, proxyAddr, sink string, counts <-chan int64) {
	c, err := net.Dial("tcp", proxyAddr)
	if err != nil {
		b.Fatal(err)
	}
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", sink, sink)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil || resp.StatusCode != 200 || br.Buffered() != 0 {
		b.Fatalf("CONNECT: %v %v", resp, err)
	}
	pump(b, c.(*net.TCPConn), counts)
}

// BenchmarkPlainHTTPKeepAlive compares small keep-alive GETs from parallel
// clients through the proxy with the same GETs sent direct. "proxy-name"
// asks for a name, which the proxy resolves (on every request) with a
// loopback DNS server.
func BenchmarkPlainHTTPKeepAlive(b *testing.B) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello\n")
	}))
	defer up.Close()
	port := netip.MustParseAddrPort(up.Listener.Addr().String()).Port()
	proxyURL := &url.URL{Scheme: "http", Host: benchProxy(b, map[string][]netip.Addr{"api.example.test": {loopback}})}
	for _, c := range []struct {
		name  string
		url   string
		proxy *url.URL
	}{
		{"direct", up.URL + "/", nil},
		{"proxy", up.URL + "/", proxyURL},
		{"proxy-name", fmt.Sprintf("http://api.example.test:%d/", port), proxyURL},
		{"goproxy", up.URL + "/", &url.URL{Scheme: "http", Host: goproxyPeer(b, false)}},
		{"goproxy-256", up.URL + "/", &url.URL{Scheme: "http", Host: goproxyPeer(b, true)}},
	} {
		b.Run(c.name, func(b *testing.B) {
			tr := &http.Transport{MaxIdleConnsPerHost: 256}
			if c.proxy != nil {
				tr.Proxy = http.ProxyURL(c.proxy)
			}
			defer tr.CloseIdleConnections()
			cl := &http.Client{Transport: tr}
			b.SetParallelism(8)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					resp, err := cl.Get(c.url)
					if err != nil {
						b.Error(err)
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						b.Errorf("status %d", resp.StatusCode)
						return
					}
				}
			})
		})
	}
}
