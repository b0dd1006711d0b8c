package testbed

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// ProbeKind is what the probe does with a service.
type ProbeKind string

// The kinds of service the probe knows.
const (
	// ProbeJSONRPC POSTs eth_blockNumber to URL and wants a result.
	ProbeJSONRPC ProbeKind = "jsonrpc"
	// ProbeHTTP GETs URL and wants status 200.
	ProbeHTTP ProbeKind = "http"
	// ProbeNode joins a node at Addr: TCP "HELLO" wanting "WELCOME", and
	// with UDP set also a UDP "PING" wanting "PONG" (not through a proxy).
	ProbeNode ProbeKind = "node"
)

// ProbeTarget is one service the probe tries.
type ProbeTarget struct {
	// Service names the service in the results ("infura"). MANDATORY.
	Service string `json:"service"`
	// Kind says how to try it. MANDATORY.
	Kind ProbeKind `json:"kind"`
	// URL is the endpoint of ProbeJSONRPC and ProbeHTTP targets.
	URL string `json:"url,omitempty"`
	// Addr is the host:port of a ProbeNode target (a name or an address).
	Addr string `json:"addr,omitempty"`
	// UDP also pings a ProbeNode target over UDP.
	UDP bool `json:"udp,omitempty"`
}

// ProbeConfig configures Probe. The zero value of every OPTIONAL field is
// usable.
type ProbeConfig struct {
	// Targets are the services to try, in order. MANDATORY.
	Targets []ProbeTarget
	// DNS is the resolver ("127.0.0.1:5353") names are resolved with, over
	// UDP. OPTIONAL: "" uses the system's.
	DNS string
	// Proxy is an HTTP proxy URL; HTTP and HTTPS requests and TCP node
	// connections (CONNECT) go through it, and it resolves the names.
	// OPTIONAL: nil connects directly.
	Proxy *url.URL
	// RootCAs verify HTTPS servers. OPTIONAL: nil uses the system's.
	RootCAs *x509.CertPool
	// Timeout bounds each attempt. OPTIONAL: 0 means 5s.
	Timeout time.Duration
	// Attempts is how many times a failing service is tried. OPTIONAL: 0
	// means 2.
	Attempts int
	// Backoff is the wait before the second attempt, doubled for each
	// next one. OPTIONAL: 0 means 500ms.
	Backoff time.Duration
	// Dial connects to an "ip:port" (never a name: the probe resolves
	// first, through Dial too) over "tcp" or "udp", e.g. from inside a
	// device's network namespace (Netns.DialContext). OPTIONAL: nil dials
	// from this process's network.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// Outcome is how a service behaved for the probe, as a tester would note it.
type Outcome string

// The outcomes.
const (
	Worked     Outcome = "worked"
	FailedFast Outcome = "failed fast" // every attempt ended with an error before its timeout
	Hung       Outcome = "hung"        // an attempt ran into its timeout
)

// ProbeResult is what happened to one target.
type ProbeResult struct {
	Service  string        `json:"service"`
	Target   string        `json:"target"`
	Outcome  Outcome       `json:"outcome"`
	Attempts int           `json:"attempts"`
	Elapsed  time.Duration `json:"elapsed_ns"`
	// Detail is the answer that worked, or the last error.
	Detail string `json:"detail"`
}

// Probe tries every target like the app's network layer would: resolve,
// connect, call, with a timeout per attempt and retries with back-off,
// and says per service whether it worked, failed fast or hung. Targets
// are tried one after another; ctx bounds the whole probe.
func Probe(ctx context.Context, cfg ProbeConfig) []ProbeResult {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.Attempts <= 0 {
		cfg.Attempts = 2
	}
	if cfg.Backoff <= 0 {
		cfg.Backoff = 500 * time.Millisecond
	}
	p := newProber(cfg)
	defer p.client.CloseIdleConnections()
	out := make([]ProbeResult, 0, len(cfg.Targets))
	for _, t := range cfg.Targets {
		out = append(out, p.probe(ctx, t))
	}
	return out
}

type prober struct {
	cfg    ProbeConfig
	client *http.Client
}

func newProber(cfg ProbeConfig) *prober {
	if cfg.Dial == nil {
		var d net.Dialer
		cfg.Dial = d.DialContext
	}
	p := &prober{cfg: cfg}
	tr := &http.Transport{
		DialContext:       p.dial,
		TLSClientConfig:   &tls.Config{RootCAs: cfg.RootCAs},
		DisableKeepAlives: true, // every attempt connects anew, as a retry would
	}
	if cfg.Proxy != nil {
		tr.Proxy = http.ProxyURL(cfg.Proxy)
	}
	p.client = &http.Client{Transport: tr}
	return p
}

// dial resolves addr's host (through the probe's resolver) and connects to
// its addresses in turn with cfg.Dial, as a device's stack would.
func (p *prober) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		return p.cfg.Dial(ctx, network, net.JoinHostPort(ip.Unmap().String(), port))
	}
	ips, err := p.lookup(ctx, host)
	if err != nil {
		return nil, err
	}
	var first error
	for _, ip := range ips {
		c, err := p.cfg.Dial(ctx, network, net.JoinHostPort(ip.Unmap().String(), port))
		if err == nil {
			return c, nil
		}
		if first == nil {
			first = err
		}
		if ctx.Err() != nil {
			break
		}
	}
	return nil, first
}

func (p *prober) probe(ctx context.Context, t ProbeTarget) ProbeResult {
	r := ProbeResult{Service: t.Service, Target: t.URL}
	if t.Kind == ProbeNode {
		r.Target = t.Addr
	}
	start := time.Now()
	wait := p.cfg.Backoff
	hung := false
	for i := 0; i < p.cfg.Attempts; i++ {
		if i > 0 {
			select {
			case <-ctx.Done():
				r.Detail = ctx.Err().Error()
				r.Outcome, r.Elapsed = FailedFast, time.Since(start)
				if hung {
					r.Outcome = Hung
				}
				return r
			case <-time.After(wait):
			}
			wait *= 2
		}
		r.Attempts++
		actx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
		detail, err := p.attempt(actx, t)
		timedOut := actx.Err() != nil && ctx.Err() == nil
		cancel()
		if err == nil {
			r.Outcome, r.Detail, r.Elapsed = Worked, detail, time.Since(start)
			return r
		}
		r.Detail = err.Error()
		if timedOut || isTimeout(err) {
			hung = true
		}
	}
	r.Outcome, r.Elapsed = FailedFast, time.Since(start)
	if hung {
		r.Outcome = Hung
	}
	return r
}

// lookup resolves host: with cfg.DNS, by asking it (A, then AAAA) over
// UDP through cfg.Dial, as a device configured with that resolver would;
// otherwise with the system's resolver.
func (p *prober) lookup(ctx context.Context, host string) ([]netip.Addr, error) {
	if p.cfg.DNS == "" {
		return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	}
	var out []netip.Addr
	for _, qtype := range []uint16{dns.TypeA, dns.TypeAAAA} {
		m, err := p.exchange(ctx, host, qtype)
		if err != nil {
			return nil, fmt.Errorf("lookup %s on %s: %w", host, p.cfg.DNS, err)
		}
		if m.Rcode == dns.RcodeNameError {
			return nil, fmt.Errorf("lookup %s on %s: no such host", host, p.cfg.DNS)
		}
		if m.Rcode != dns.RcodeSuccess {
			return nil, fmt.Errorf("lookup %s on %s: %s", host, p.cfg.DNS, dns.RcodeToString[m.Rcode])
		}
		for _, rr := range m.Answer {
			switch rr := rr.(type) {
			case *dns.A:
				if a, ok := netip.AddrFromSlice(rr.A.To4()); ok {
					out = append(out, a)
				}
			case *dns.AAAA:
				if a, ok := netip.AddrFromSlice(rr.AAAA); ok {
					out = append(out, a)
				}
			}
		}
		if len(out) > 0 {
			return out, nil
		}
	}
	return nil, fmt.Errorf("lookup %s on %s: no addresses", host, p.cfg.DNS)
}

func (p *prober) exchange(ctx context.Context, host string, qtype uint16) (*dns.Msg, error) {
	c, err := p.cfg.Dial(ctx, "udp", p.cfg.DNS)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	defer stop()
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(host), qtype)
	dc := &dns.Conn{Conn: c}
	if err := dc.WriteMsg(q); err != nil {
		return nil, err
	}
	for {
		m, err := dc.ReadMsg()
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, err
		}
		if m.Id == q.Id {
			return m, nil
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) ||
		(errors.As(err, &ne) && ne.Timeout())
}

func (p *prober) attempt(ctx context.Context, t ProbeTarget) (string, error) {
	switch t.Kind {
	case ProbeJSONRPC:
		return p.jsonRPC(ctx, t.URL)
	case ProbeHTTP:
		return p.get(ctx, t.URL)
	case ProbeNode:
		return p.node(ctx, t)
	}
	return "", fmt.Errorf("unknown probe kind %q (want jsonrpc, http or node)", t.Kind)
}

func (p *prober) jsonRPC(ctx context.Context, u string) (string, error) {
	body := `{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber","params":[]}`
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, strings.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := p.client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("HTTP %s", resp.Status)
	}
	var reply struct {
		Result json.RawMessage `json:"result"`
		Error  *struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal(data, &reply); err != nil {
		return "", fmt.Errorf("not a JSON-RPC reply: %v", err)
	}
	if reply.Error != nil {
		return "", fmt.Errorf("JSON-RPC error %d: %s", reply.Error.Code, reply.Error.Message)
	}
	if len(reply.Result) == 0 {
		return "", errors.New("JSON-RPC reply without a result")
	}
	return "eth_blockNumber " + string(reply.Result), nil
}

func (p *prober) get(ctx context.Context, u string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", err
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("HTTP %s", resp.Status)
	}
	return "HTTP 200 " + strings.TrimSpace(string(data)), nil
}

// node joins a node over TCP (directly, or by CONNECT through the proxy)
// and, if asked and not proxied, pings it over UDP.
func (p *prober) node(ctx context.Context, t ProbeTarget) (string, error) {
	c, err := p.dialTCP(ctx, t.Addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	defer stop()
	if _, err := io.WriteString(c, "HELLO unicorn-probe\n"); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		return "", fmt.Errorf("no welcome: %w", err)
	}
	if !strings.HasPrefix(line, "WELCOME ") {
		return "", fmt.Errorf("unexpected answer %q", strings.TrimSpace(line))
	}
	detail := "tcp " + strings.TrimSpace(line)
	if !t.UDP || p.cfg.Proxy != nil {
		return detail, nil
	}
	u, err := p.dial(ctx, "udp", t.Addr)
	if err != nil {
		return "", err
	}
	defer u.Close()
	stopU := context.AfterFunc(ctx, func() { u.SetDeadline(time.Now()) })
	defer stopU()
	// UDP loses datagrams: ping up to 3 times within the attempt.
	buf := make([]byte, 512)
	for i := 0; i < 3; i++ {
		if _, err := u.Write([]byte("PING unicorn-probe")); err != nil {
			return "", err
		}
		u.SetReadDeadline(time.Now().Add(p.cfg.Timeout / 3))
		n, err := u.Read(buf)
		if err == nil && strings.HasPrefix(string(buf[:n]), "PONG ") {
			return detail + ", udp " + string(buf[:n]), nil
		}
		if err != nil && !isTimeout(err) {
			return "", fmt.Errorf("udp: %w", err)
		}
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
	}
	return "", fmt.Errorf("udp: no pong: %w", os.ErrDeadlineExceeded)
}

func (p *prober) dialTCP(ctx context.Context, addr string) (net.Conn, error) {
	if p.cfg.Proxy == nil {
		return p.dial(ctx, "tcp", addr)
	}
	c, err := p.dial(ctx, "tcp", p.cfg.Proxy.Host)
	if err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	defer stop()
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", addr, addr)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		c.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("proxy CONNECT: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		c.Close()
		return nil, fmt.Errorf("proxy CONNECT %s: %s", addr, resp.Status)
	}
	if br.Buffered() > 0 {
		c.Close()
		return nil, errors.New("proxy CONNECT: data before the tunnel")
	}
	return c, nil
}

// WriteProbeResults writes results as a table.
func WriteProbeResults(w io.Writer, results []ProbeResult) error {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%-16s %-12s %8s %9s  %s\n", "SERVICE", "OUTCOME", "ATTEMPTS", "TIME", "DETAIL")
	for _, r := range results {
		d := strings.Join(strings.Fields(r.Detail), " ")
		if len(d) > 100 {
			d = d[:100] + "..."
		}
		fmt.Fprintf(&b, "%-16s %-12s %8d %9s  %s\n", r.Service, r.Outcome, r.Attempts, r.Elapsed.Round(time.Millisecond), d)
	}
	_, err := w.Write(b.Bytes())
	return err
}
