package testbed

import (
	"crypto/tls"
	"io"
	"log"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"
)

// ServeHTTP serves h over plain HTTP/1.1 on ip (a loopback address such as
// "127.0.0.1" or "127.0.0.2") at a free port, and returns "ip:port" and a
// cleanup that closes the server and its connections. The listener is
// bound before ServeHTTP returns, so the server is ready at once. The
// cleanup is also registered with tb and may be called twice.
func ServeHTTP(tb testing.TB, ip string, h http.Handler) (addr string, cleanup func()) {
	tb.Helper()
	return serve(tb, ip, h, nil)
}

// ServeHTTPS is ServeHTTP over TLS, with certificates from TestCA for
// whatever name the client asks for.
func ServeHTTPS(tb testing.TB, ip string, h http.Handler) (addr string, cleanup func()) {
	tb.Helper()
	return serve(tb, ip, h, TestCA().ServerConfig())
}

func serve(tb testing.TB, ip string, h http.Handler, tlsConf *tls.Config) (string, func()) {
	tb.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		tb.Fatalf("testbed: listen on %s: %v", ip, err)
	}
	return serveOn(tb, l, h, tlsConf)
}

// serveOn serves h on l (over TLS when tlsConf is set) until the test ends
// or the returned cleanup is called, and returns l's address.
func serveOn(tb testing.TB, l net.Listener, h http.Handler, tlsConf *tls.Config) (string, func()) {
	addr := l.Addr().String()
	if tlsConf != nil {
		l = tls.NewListener(l, tlsConf)
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		// Clients that give up mid-handshake are part of the tests.
		ErrorLog: log.New(io.Discard, "", 0),
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(l)
	}()
	cleanup := sync.OnceFunc(func() {
		srv.Close()
		<-done
	})
	tb.Cleanup(cleanup)
	return addr, cleanup
}
