package proxy

import (
	"context"
	"net/http"
	"time"

	"github.com/chaos-unicorn/unicorn/rules"
)

// The lean path serves allowed plain HTTP/1.1 keep-alive sessions without
// net/http's server and transport (PERFORMANCE.md): once the first request
// on a client connection is decided allow, the handler takes the connection
// over and, in its one goroutine, reads each request, decides it with the
// same decide, forwards it on one upstream connection pinned to the client
// connection, and copies the response back with one flush.
//
// Whatever the lean path does not forward itself (a refused request, a
// CONNECT, an upgrade, the landing page, an HTTP/1.0 request, a head that
// does not fit the read buffer, an upstream that cannot be dialled) is
// handed back, unread, to a second http.Server with the same handler; a
// decision already made travels with the connection so that the request
// is decided, logged and answered exactly once, by the same code as ever.

// Timeouts shared by the HTTP servers and the lean path.
const (
	readHeaderTimeout = 30 * time.Second
	idleTimeout       = 2 * time.Minute
	// responseHeadTimeout bounds the wait for an upstream's response head
	// on the lean path.
	responseHeadTimeout = 2 * time.Minute
)

// maxReplayDepth bounds how many partly read buffers a connection handed
// back and forth may carry; a client that pipelines past it is closed.
const maxReplayDepth = 4

// decided is a decision made before goproxy sees the request: onRequest
// uses it instead of asking the rules again.
type decided struct {
	o   outcome
	err error
}

// decidedKey is the request context key of a *decided.
type decidedKey struct{}

// predecided returns the decision already made for req, if any.
func predecided(req *http.Request) (*decided, bool) {
	d, ok := req.Context().Value(decidedKey{}).(*decided)
	return d, ok
}

// leanEligible reports whether r is a request the lean path can forward
// itself: an absolute http URL over HTTP/1.1, no upgrade, no Expect.
func leanEligible(r *http.Request) bool {
	return r.Method != http.MethodConnect && r.URL.Scheme == "http" && r.URL.Host != "" &&
		r.ProtoMajor == 1 && r.ProtoMinor == 1 &&
		len(r.Header["Upgrade"]) == 0 && len(r.Header["Expect"]) == 0
}

// leanAllowed reports whether o lets the request through to o.target
// untouched. http_error and rpc_error requests are goproxy's to answer
// (onRequest); tls_fail means nothing on plain HTTP and relays here.
func leanAllowed(o outcome) bool {
	switch o.decision.Action {
	case rules.ActionReject, rules.ActionSinkhole, rules.ActionBlackhole,
		rules.ActionHTTPError, rules.ActionRPCError:
		return false
	}
	if hasByteFault(o.decision) {
		return false // goproxy's transport dials it through the fault (dialDecided)
	}
	return o.target.IsValid()
}

// serveLean handles a plain proxy request that may start a lean session.
// It returns false, with r carrying its decision, when goproxy must answer
// it instead.
func (p *Proxy) serveLean(w http.ResponseWriter, r *http.Request) (*http.Request, bool) {
	if !leanEligible(r) {
		return r, false
	}
	host, port, err := splitTarget(r.URL.Host, 80)
	if err != nil {
		return r, false // onRequest answers 400
	}
	o, err := p.decide(r.Context(), clientAddr(r), host, port, r)
	d := &decided{o: o, err: err}
	r = r.WithContext(context.WithValue(r.Context(), decidedKey{}, d))
	// A first request with a body stays with the server, which owns its
	// body until the handler returns.
	if err != nil || !leanAllowed(o) || r.ContentLength != 0 || len(r.TransferEncoding) != 0 {
		return r, false
	}
	if err := p.wait(r.Context(), o.delay); err != nil {
		abortResponse()
	}
	d.o.delay = 0 // waited: goproxy must not wait again
	s := &session{p: p, client: clientAddr(r)}
	// Dial before taking the connection over: a target that cannot be
	// reached is goproxy's to answer.
	if err := s.dial(o.target); err != nil {
		return r, false
	}
	conn, rw, ok := p.hijack(w)
	if !ok {
		s.close()
		return r, true
	}
	s.conn, s.br, s.bw = conn, rw.Reader, rw.Writer
	defer s.close()
	req := r.WithContext(p.ctx)
	req.RequestURI = ""
	req.Body = nil
	if !s.forward(req, o.target, 0) {
		s.fail(req, s.lastErr)
		return r, true
	}
	s.loop()
	return r, true
}
