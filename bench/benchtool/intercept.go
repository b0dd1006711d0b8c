package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// testTarget checks that target is "name.test:port": a name the bench's
// fake upstream resolves to 127.0.0.1, so that the proxy's dial stays on
// loopback.
func testTarget(target string) error {
	host, _, err := net.SplitHostPort(target)
	if err != nil {
		return err
	}
	if !strings.HasSuffix(host, ".test") {
		return fmt.Errorf("%s: only names under .test (the fake upstream's, all 127.0.0.1)", target)
	}
	return nil
}

// rootsFrom returns a pool of the PEM certificates in the given files.
func rootsFrom(files string) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	for _, f := range strings.Split(files, ",") {
		if f == "" {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		if !pool.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("%s: no PEM certificate", f)
		}
	}
	return pool, nil
}

// keepAlive makes -n HTTPS GETs of https://target/?bytes=B through the
// CONNECT proxy -proxy over -conns keep-alive connections (one CONNECT and
// one TLS handshake each, made before the clock starts) and prints
// "requests seconds req/s".
func keepAlive(args []string) error {
	fs := flag.NewFlagSet("keepalive", flag.ExitOnError)
	proxy := fs.String("proxy", "", "CONNECT proxy ip:port")
	target := fs.String("target", "", "name.test:port of the HTTPS server")
	n := fs.Int("n", 20000, "requests")
	conns := fs.Int("conns", 4, "keep-alive connections (one client each)")
	size := fs.Int("bytes", 0, "response body size")
	roots := fs.String("roots", "", "comma-separated PEM files to trust")
	fs.Parse(args)
	pool, err := checkProxyTarget(*proxy, *target, *roots)
	if err != nil {
		return err
	}
	pu := &url.URL{Scheme: "http", Host: *proxy}
	u := fmt.Sprintf("https://%s/?bytes=%d", *target, *size)
	// One transport (so one connection) per worker: the workers cannot
	// share or open extra connections.
	clients := make([]*http.Client, *conns)
	for i := range clients {
		clients[i] = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
			Proxy:               http.ProxyURL(pu),
			TLSClientConfig:     &tls.Config{RootCAs: pool},
			MaxConnsPerHost:     1,
			MaxIdleConnsPerHost: 1,
			DisableCompression:  true,
			ForceAttemptHTTP2:   false,
		}}
	}
	get := func(c *http.Client) error {
		resp, err := c.Get(u)
		if err != nil {
			return err
		}
		k, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
		if resp.StatusCode != 200 || k != int64(*size) {
			return fmt.Errorf("GET %s: %s, %d bytes", u, resp.Status, k)
		}
		return nil
	}
	for _, c := range clients { // warm-up: CONNECT and handshake
		if err := get(c); err != nil {
			return err
		}
	}
	var left atomic.Int64
	left.Store(int64(*n))
	var wg sync.WaitGroup
	errs := make(chan error, len(clients))
	start := time.Now()
	for _, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for left.Add(-1) >= 0 {
				if err := get(c); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	secs := time.Since(start).Seconds()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	fmt.Printf("%d %.3f %.0f\n", *n, secs, float64(*n)/secs)
	return nil
}

// leafCheck opens -conns fresh connections in turn through the CONNECT
// proxy to target, each with a TLS handshake and one GET, and prints per
// connection "handshake-ms same" where same is 1 when the certificate the
// proxy presented has the public key of the first connection's (so the
// leaf, key included, was reused), else 0.
func leafCheck(args []string) error {
	fs := flag.NewFlagSet("leafcheck", flag.ExitOnError)
	proxy := fs.String("proxy", "", "CONNECT proxy ip:port")
	target := fs.String("target", "", "name.test:port")
	conns := fs.Int("conns", 2, "connections")
	roots := fs.String("roots", "", "comma-separated PEM files to trust")
	fs.Parse(args)
	pool, err := checkProxyTarget(*proxy, *target, *roots)
	if err != nil {
		return err
	}
	host, _, _ := net.SplitHostPort(*target)
	var first []byte
	for i := 0; i < *conns; i++ {
		c, err := net.DialTimeout("tcp", *proxy, 5*time.Second)
		if err != nil {
			return err
		}
		c.SetDeadline(time.Now().Add(30 * time.Second))
		fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", *target, *target)
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
		if err != nil || resp.StatusCode != 200 {
			c.Close()
			return fmt.Errorf("CONNECT %s: %v %v", *target, resp, err)
		}
		if br.Buffered() != 0 {
			c.Close()
			return errors.New("CONNECT: bytes after the response head")
		}
		tc := tls.Client(c, &tls.Config{ServerName: host, RootCAs: pool, NextProtos: []string{"http/1.1"}})
		t0 := time.Now()
		err = tc.Handshake()
		ms := float64(time.Since(t0).Microseconds()) / 1000
		if err != nil {
			c.Close()
			return fmt.Errorf("handshake %d: %v", i+1, err)
		}
		// One request, so the connection did carry traffic.
		fmt.Fprintf(tc, "GET /?bytes=0 HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", *target)
		r, err := http.ReadResponse(bufio.NewReader(tc), nil)
		if err == nil {
			io.Copy(io.Discard, r.Body)
			r.Body.Close()
		}
		c.Close()
		if err != nil || r.StatusCode != 200 {
			return fmt.Errorf("GET on connection %d: %v %v", i+1, r, err)
		}
		key := tc.ConnectionState().PeerCertificates[0].RawSubjectPublicKeyInfo
		if first == nil {
			first = key
		}
		same := 0
		if bytes.Equal(key, first) {
			same = 1
		}
		fmt.Printf("%.3f %d\n", ms, same)
	}
	return nil
}

// checkProxyTarget refuses a proxy off loopback or a target outside .test,
// and returns the pool of the PEM files in roots.
func checkProxyTarget(proxy, target, roots string) (*x509.CertPool, error) {
	if err := loopback(proxy); err != nil {
		return nil, err
	}
	if err := testTarget(target); err != nil {
		return nil, err
	}
	return rootsFrom(roots)
}
