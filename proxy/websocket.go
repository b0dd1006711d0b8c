package proxy

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"

	"github.com/chaos-unicorn/unicorn/rules"
	"golang.org/x/net/http/httpguts"
)

// WebSocket upgrades (RFC 6455), plain or inside an intercepted
// connection, are handled here rather than by goproxy: the request is
// decided like any other (route), sent upstream through the proxy's
// transport (the decided address; for wss the same verified TLS as other
// intercepted requests), and after the upstream's 101 the proxy relays
// frames both ways, tracking the client connection so that Close ends it.
//
// Under an rpc_error decision the client's frames are parsed: a message
// sent as one unfragmented, masked, uncompressed text frame that holds a
// JSON-RPC call (or batch) naming a faulted method is not forwarded;
// the client gets an unmasked text frame with the JSON-RPC error (its
// id, the rule's code and message; nothing for a notification). In a
// batch the other elements are forwarded as one re-encoded masked frame
// and the errors come back to the client as a separate frame (a JSON
// array): the batch's replies then arrive in two messages. Every other
// frame (fragmented messages and their continuations, binary, control
// frames) passes unmodified, and so do all server frames. The proxy
// drops Sec-WebSocket-Extensions from such an upgrade so that
// permessage-deflate is never negotiated and text frames stay readable.

// maxWSInspect bounds the text frame an rpc_error rule reads; a larger
// one is forwarded untouched.
const maxWSInspect = 1 << 20

// wsText is the WebSocket text frame opcode.
const wsText = 1

// isWebSocket reports whether r asks for a WebSocket upgrade.
func isWebSocket(r *http.Request) bool {
	return r.ProtoMajor == 1 && r.Method == http.MethodGet &&
		httpguts.HeaderValuesContainsToken(r.Header["Connection"], "upgrade") &&
		httpguts.HeaderValuesContainsToken(r.Header["Upgrade"], "websocket")
}

// serveWebSocket serves the upgrade request r, whose URL is absolute.
func (p *Proxy) serveWebSocket(w http.ResponseWriter, r *http.Request) {
	out, resp, d := p.route(r)
	if resp != nil {
		writeResponse(w, resp)
		return
	}
	var ps *rules.Params
	if d.Action == rules.ActionRPCError {
		ps = d.Params()
	}
	out = out.Clone(out.Context())
	out.RequestURI = ""
	out.Header.Del("Proxy-Connection")
	out.Header.Del("Proxy-Authorization")
	if ps != nil {
		out.Header.Del("Sec-WebSocket-Extensions")
	}
	up, err := p.tr.RoundTrip(out)
	if err != nil {
		p.log.Info("proxy error", "client", clientAddr(r).String(), "target", r.URL.Host, "err", err)
		writeResponse(w, textResponse(r, http.StatusBadGateway, "unicorn: cannot reach "+r.URL.Host+": "+err.Error()))
		return
	}
	if up.StatusCode != http.StatusSwitchingProtocols {
		writeResponse(w, up)
		return
	}
	upc, ok := up.Body.(io.ReadWriteCloser)
	if !ok {
		up.Body.Close()
		writeResponse(w, textResponse(r, http.StatusBadGateway, "unicorn: upgrade without a connection"))
		return
	}
	defer upc.Close()
	conn, rw, ok := p.hijack(w)
	if !ok {
		return
	}
	defer p.untrack(conn)
	// A rule change that blocks the host cuts the connection (live.go).
	if host, port, err := splitTarget(r.URL.Host, defaultPort(r.URL.Scheme)); err == nil {
		f := hostFlow(conn, host, port)
		f.Method, f.Path, f.Header = r.Method, r.URL.Path, r.Header.Get
		defer p.watch(conn, d, f)()
	}
	bw := bufio.NewWriter(conn)
	bw.WriteString("HTTP/1.1 " + up.Status + "\r\n")
	up.Header.Write(bw)
	bw.WriteString("\r\n")
	if bw.Flush() != nil {
		return
	}
	pipeWebSocket(conn, rw.Reader, upc, ps)
}

// writeResponse copies resp to w and closes its body.
func writeResponse(w http.ResponseWriter, resp *http.Response) {
	defer resp.Body.Close()
	for k, vs := range resp.Header {
		w.Header()[k] = vs
	}
	w.WriteHeader(resp.StatusCode)
	io.Copy(w, resp.Body)
}

// pipeWebSocket relays between the client (read through cr, which holds
// bytes already buffered) and the upstream until either side ends, then
// closes both. ps non-nil applies an rpc_error rule to the client's frames.
func pipeWebSocket(client net.Conn, cr *bufio.Reader, up io.ReadWriteCloser, ps *rules.Params) {
	closeBoth := sync.OnceFunc(func() {
		client.Close()
		up.Close()
	})
	var wg sync.WaitGroup
	run := func(f func()) {
		wg.Go(func() {
			f()
			closeBoth()
		})
	}
	if ps == nil {
		run(func() { io.Copy(up, cr) })
		run(func() { io.Copy(client, up) })
	} else {
		var mu sync.Mutex // whole frames to the client, from either side
		run(func() { filterClientFrames(cr, up, client, &mu, ps) })
		run(func() { copyFrames(bufio.NewReader(up), client, &mu) })
	}
	wg.Wait()
}

// wsFrame is a frame head as read.
type wsFrame struct {
	fin    bool
	rsv    byte
	op     byte
	masked bool
	key    [4]byte
	n      uint64 // payload length
	raw    []byte // the head's bytes
}

// readFrameHead reads one frame head from r.
func readFrameHead(r *bufio.Reader) (wsFrame, error) {
	var f wsFrame
	b := make([]byte, 2, 14)
	if _, err := io.ReadFull(r, b); err != nil {
		return f, err
	}
	f.fin, f.rsv, f.op = b[0]&0x80 != 0, b[0]&0x70, b[0]&0x0f
	f.masked = b[1]&0x80 != 0
	f.n = uint64(b[1] & 0x7f)
	ext := 0
	switch f.n {
	case 126:
		ext = 2
	case 127:
		ext = 8
	}
	if f.masked {
		ext += 4
	}
	b = b[:2+ext]
	if _, err := io.ReadFull(r, b[2:]); err != nil {
		return f, err
	}
	rest := b[2:]
	switch f.n {
	case 126:
		f.n, rest = uint64(binary.BigEndian.Uint16(rest)), rest[2:]
	case 127:
		f.n, rest = binary.BigEndian.Uint64(rest), rest[8:]
	}
	if f.n > 1<<62 {
		return f, errors.New("websocket: frame too long")
	}
	if f.masked {
		copy(f.key[:], rest)
	}
	f.raw = b
	return f, nil
}

// copyFrame writes f's head and copies its payload from r to w.
func copyFrame(w io.Writer, r io.Reader, f wsFrame) error {
	if _, err := w.Write(f.raw); err != nil {
		return err
	}
	_, err := io.CopyN(w, r, int64(f.n))
	return err
}

// copyFrames copies whole frames from r to w, each under mu.
func copyFrames(r *bufio.Reader, w io.Writer, mu *sync.Mutex) {
	for {
		f, err := readFrameHead(r)
		if err != nil {
			return
		}
		mu.Lock()
		err = copyFrame(w, r, f)
		mu.Unlock()
		if err != nil {
			return
		}
	}
}

// filterClientFrames copies the client's frames from r to up, answering
// faulted JSON-RPC calls itself (to client, under mu).
func filterClientFrames(r *bufio.Reader, up io.Writer, client io.Writer, mu *sync.Mutex, ps *rules.Params) {
	bw := bufio.NewWriter(up)
	for {
		f, err := readFrameHead(r)
		if err != nil {
			return
		}
		if !(f.op == wsText && f.fin && f.rsv == 0 && f.masked && f.n <= maxWSInspect) {
			if copyFrame(bw, r, f) != nil || bw.Flush() != nil {
				return
			}
			continue
		}
		payload := make([]byte, f.n)
		if _, err := io.ReadFull(r, payload); err != nil {
			return
		}
		msg := make([]byte, len(payload))
		for i, c := range payload {
			msg[i] = c ^ f.key[i%4]
		}
		fwd, reply, hit := rpcFaultMessage(ps, msg)
		if !hit {
			bw.Write(f.raw)
			bw.Write(payload)
		} else if fwd != nil {
			writeFrame(bw, wsText, fwd, true)
		}
		if bw.Flush() != nil {
			return
		}
		if reply != nil {
			mu.Lock()
			err := writeFrame(client, wsText, reply, false)
			mu.Unlock()
			if err != nil {
				return
			}
		}
	}
}

// rpcFaultMessage applies an rpc_error rule with params ps to one text
// message. hit is false when nothing in it is faulted. Otherwise fwd is
// what to forward instead (nil: nothing) and reply what to answer the
// client (nil: nothing).
func rpcFaultMessage(ps *rules.Params, msg []byte) (fwd, reply []byte, hit bool) {
	trimmed := bytes.TrimSpace(msg)
	if len(trimmed) == 0 {
		return nil, nil, false
	}
	if trimmed[0] == '{' {
		c, ok := parseCall(trimmed)
		if !ok || !faulted(ps, c) {
			return nil, nil, false
		}
		if len(c.ID) > 0 {
			reply = rpcError(ps, c)
		}
		return nil, reply, true
	}
	var elems []json.RawMessage
	if trimmed[0] != '[' || json.Unmarshal(trimmed, &elems) != nil {
		return nil, nil, false
	}
	var keep, errs []json.RawMessage
	for _, e := range elems {
		c, ok := parseCall(e)
		switch {
		case !ok || !faulted(ps, c):
			keep = append(keep, e)
		case len(c.ID) > 0:
			errs = append(errs, rpcError(ps, c))
		}
	}
	if len(keep) == len(elems) {
		return nil, nil, false
	}
	if len(keep) > 0 {
		fwd, _ = json.Marshal(keep)
	}
	if len(errs) > 0 {
		reply, _ = json.Marshal(errs)
	}
	return fwd, reply, true
}

// writeFrame writes payload as one final frame of opcode op, masked with
// a fresh key when mask is set (client to server).
func writeFrame(w io.Writer, op byte, payload []byte, mask bool) error {
	b := make([]byte, 0, 14+len(payload))
	b = append(b, 0x80|op)
	var m byte
	if mask {
		m = 0x80
	}
	switch n := len(payload); {
	case n < 126:
		b = append(b, m|byte(n))
	case n <= 0xffff:
		b = append(b, m|126)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b = append(b, m|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	if !mask {
		b = append(b, payload...)
	} else {
		var key [4]byte
		rand.Read(key[:])
		b = append(b, key[:]...)
		for i, c := range payload {
			b = append(b, c^key[i%4])
		}
	}
	_, err := w.Write(b)
	return err
}
