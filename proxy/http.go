package proxy

import (
	"context"
	"net/http"

	"github.com/chaos-unicorn/unicorn/rules"
	"github.com/elazarl/goproxy"
)

// onRequest is the one goproxy request hook. It asks the rules about a
// plain HTTP proxy request and either returns the request, pinned to the
// address to dial, or a canned response.
func (p *Proxy) onRequest(req *http.Request, _ *goproxy.ProxyCtx) (*http.Request, *http.Response) {
	out, resp, _ := p.route(req)
	return out, resp
}

// route is onRequest, also returning the decision made (zero when the
// request was refused before a decision).
func (p *Proxy) route(req *http.Request) (*http.Request, *http.Response, rules.Decision) {
	host, port, err := splitTarget(req.URL.Host, defaultPort(req.URL.Scheme))
	if err != nil {
		return req, textResponse(req, http.StatusBadRequest, "unicorn: "+err.Error()), rules.Decision{}
	}
	var o outcome
	if d, ok := predecided(req); ok {
		o, err = d.o, d.err
	} else {
		o, err = p.decide(req.Context(), clientAddr(req), host, port, req)
	}
	if err != nil {
		p.log.Info("proxy error", "client", clientAddr(req).String(), "target", req.URL.Host, "err", err)
		return req, textResponse(req, errStatus(err), "unicorn: "+err.Error()), rules.Decision{}
	}
	d := o.decision

	switch o.decision.Action {
	case rules.ActionReject:
		return req, newBlockPage(http.StatusForbidden, host, d).response(req), d
	case rules.ActionSinkhole:
		return req, newBlockPage(http.StatusBadGateway, host, d).response(req), d
	case rules.ActionBlackhole:
		// Silence: no response at all. The wait ends when the client gives
		// up (the server cancels the request context when the connection
		// closes), when BlackholeTimeout passes, or on Close.
		p.holding.Add(1)
		p.wait(req.Context(), p.blackhole)
		p.holding.Add(-1)
		abortResponse()
	case rules.ActionHTTPError:
		// Answered here, after the rule's latency if any: the upstream is
		// never asked.
		if ps := d.Params(); ps != nil && ps.Latency > 0 {
			if err := p.wait(req.Context(), ps.Delay()); err != nil {
				abortResponse()
			}
		}
		return req, httpErrorResponse(req, d), d
	default:
		// allow, spoof and delay relay to o.target after o.delay (decide
		// already chose the target and summed the latency). rpc_error
		// relays what it does not answer itself (below). throttle and cut
		// also relay untouched here; later issues map them onto this
		// front end. tls_fail relays untouched: a plain request has no TLS
		// to fail.
	}

	if err := p.wait(req.Context(), connectDelay(o)); err != nil {
		abortResponse()
	}
	out := req.WithContext(context.WithValue(req.Context(), targetKey{}, o.target))
	if hasByteFault(d) {
		// The upstream connection carries the fault (dialDecided): it
		// serves this request only and is never pooled.
		out = out.WithContext(context.WithValue(out.Context(), faultKey{}, d))
		out.Close = true
	}
	if req.URL.Scheme == "http" {
		// Key the transport's idle pool by the address dialled rather than
		// by name, so a connection opened before a spoof rule turned on is
		// never reused for a request the rule now sends elsewhere. The Host
		// header still carries the name (req.Host). https keeps the name,
		// which its certificate check needs.
		u := *req.URL
		u.Host = o.target.String()
		out.URL = &u
		if out.Host == "" {
			out.Host = req.URL.Host
		}
	}
	if d.Action == rules.ActionRPCError && !isWebSocket(req) {
		out, resp := p.rpcFault(out, d)
		return out, resp, d
	}
	return out, nil, d
}

// onResponse is the one goproxy response hook: it turns a failure to
// reach the upstream into a 502 naming the target, instead of goproxy's 500.
func (p *Proxy) onResponse(resp *http.Response, ctx *goproxy.ProxyCtx) *http.Response {
	if resp != nil || ctx.Error == nil {
		return resp
	}
	return textResponse(ctx.Req, http.StatusBadGateway, "unicorn: cannot reach "+ctx.Req.URL.Host+": "+ctx.Error.Error())
}

// abortResponse ends the current request without writing a response: the
// server recovers http.ErrAbortHandler silently and closes the connection.
// It is how a blackholed or abandoned plain request leaves goproxy, whose
// request hook can otherwise only return a response.
func abortResponse() {
	panic(http.ErrAbortHandler)
}

// defaultPort is the port a proxy request URL of scheme implies.
func defaultPort(scheme string) uint16 {
	switch scheme {
	case "https", "wss":
		return 443
	}
	return 80
}
