package testbed

import (
	"crypto/tls"
	"encoding/base64"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"

	"github.com/miekg/dns"
)

// DoHPath is where the fake DoH endpoint answers (RFC 8484).
const DoHPath = "/dns-query"

// DoH returns a DNS-over-HTTPS endpoint (RFC 8484: GET with ?dns= or POST
// of application/dns-message on DoHPath) answering from d's names.
func (d *DNS) DoH() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != DoHPath {
			http.NotFound(w, r)
			return
		}
		var wire []byte
		var err error
		switch r.Method {
		case http.MethodGet:
			wire, err = base64.RawURLEncoding.DecodeString(r.URL.Query().Get("dns"))
		case http.MethodPost:
			wire, err = io.ReadAll(io.LimitReader(r.Body, 65535))
		default:
			http.Error(w, "GET or POST", http.StatusMethodNotAllowed)
			return
		}
		req := new(dns.Msg)
		if err != nil || req.Unpack(wire) != nil {
			http.Error(w, "not a DNS message", http.StatusBadRequest)
			return
		}
		rec := &dnsRecorder{}
		d.serve(rec, req)
		if rec.msg == nil {
			http.Error(w, "no answer", http.StatusBadGateway)
			return
		}
		out, err := rec.msg.Pack()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/dns-message")
		w.Write(out)
	})
}

// serveDoT serves d over DNS-over-TLS (RFC 7858) on l until the test ends.
func (d *DNS) serveDoT(tb testing.TB, l net.Listener, conf *tls.Config) {
	mux := dns.NewServeMux()
	mux.HandleFunc(".", d.serve)
	srv := &dns.Server{Listener: tls.NewListener(l, conf), Net: "tcp-tls", Handler: mux}
	var started sync.WaitGroup
	started.Add(1)
	srv.NotifyStartedFunc = started.Done
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.ActivateAndServe()
	}()
	started.Wait()
	tb.Cleanup(func() {
		srv.Shutdown()
		<-done
	})
}

// dnsRecorder is a dns.ResponseWriter that keeps the reply.
type dnsRecorder struct{ msg *dns.Msg }

var _ dns.ResponseWriter = (*dnsRecorder)(nil)

func (r *dnsRecorder) LocalAddr() net.Addr       { return &net.TCPAddr{} }
func (r *dnsRecorder) RemoteAddr() net.Addr      { return &net.TCPAddr{} }
func (r *dnsRecorder) WriteMsg(m *dns.Msg) error { r.msg = m; return nil }
func (r *dnsRecorder) Write(b []byte) (int, error) {
	m := new(dns.Msg)
	if err := m.Unpack(b); err != nil {
		return 0, err
	}
	r.msg = m
	return len(b), nil
}
func (r *dnsRecorder) Close() error        { return nil }
func (r *dnsRecorder) TsigStatus() error   { return nil }
func (r *dnsRecorder) TsigTimersOnly(bool) {}
func (r *dnsRecorder) Hijack()             {}
