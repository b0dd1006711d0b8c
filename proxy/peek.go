package proxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"time"
)

// maxPeek bounds what the transparent listener reads before deciding: a
// TLS record (16 KiB, a ClientHello with post-quantum key shares fits)
// plus its header, or an HTTP request head.
const maxPeek = 16384 + 5

// peekKind is what the first bytes of a connection turned out to be.
type peekKind uint8

const (
	peekOther peekKind = iota // unknown protocol, or nothing sent in time
	peekTLS                   // a TLS ClientHello
	peekHTTP                  // an HTTP/1.x request head
)

// peeked is what a bounded look at the first bytes found.
type peeked struct {
	kind peekKind
	host string // SNI or Host header, lower case, no port; "" if none
	data []byte // every byte read; relayed first when the flow is let through
}

// peek reads more of c after buf (what earlier peeks read), at most
// maxPeek bytes in all and until deadline, to learn the name the
// connection is for: a TLS ClientHello's server name or an HTTP request's
// Host header. It stops as soon as the bytes say which protocol it is and
// the name is known or known to be absent (done), or at the deadline or a
// read error (then done only for an error other than the deadline:
// nothing more will come). Nothing is written to c.
func peek(c net.Conn, buf []byte, deadline time.Time) (p peeked, done bool) {
	if buf == nil {
		buf = make([]byte, 0, 2048)
	}
	if p, done := classify(buf); done {
		p.data = buf
		return p, true
	}
	c.SetReadDeadline(deadline)
	defer c.SetReadDeadline(time.Time{})
	var err error
	for len(buf) < maxPeek {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		var n int
		n, err = c.Read(buf[len(buf):min(cap(buf), maxPeek)])
		buf = buf[:len(buf)+n]
		if p, done := classify(buf); done {
			p.data = buf
			return p, true
		}
		if err != nil {
			break
		}
	}
	p, _ = classify(buf)
	p.data = buf
	if p.kind != peekTLS {
		p.host = "" // an incomplete HTTP head proves nothing
	}
	var ne net.Error
	return p, len(buf) >= maxPeek || (err != nil && !(errors.As(err, &ne) && ne.Timeout()))
}

// classify looks at the bytes read so far. done reports that more bytes
// would not change the answer.
func classify(b []byte) (p peeked, done bool) {
	if len(b) == 0 {
		return p, false
	}
	if b[0] == 0x16 { // TLS handshake record
		if len(b) < 5 {
			return peeked{kind: peekTLS}, false
		}
		n := int(b[3])<<8 | int(b[4])
		if len(b) < 5+n {
			return peeked{kind: peekTLS}, false
		}
		host, err := clientHelloSNI(b[5 : 5+n])
		if err != nil {
			return peeked{}, true
		}
		return peeked{kind: peekTLS, host: host}, true
	}
	if !looksHTTP(b) {
		return peeked{}, true // neither TLS nor HTTP: no name to wait for
	}
	end := bytes.Index(b, []byte("\r\n\r\n"))
	if end < 0 {
		return peeked{kind: peekHTTP}, false
	}
	return peeked{kind: peekHTTP, host: hostHeader(b[:end])}, true
}

// httpMethods start the requests the transparent listener reads a Host from.
var httpMethods = []string{"GET ", "POST ", "PUT ", "HEAD ", "DELETE ", "OPTIONS ", "PATCH ", "CONNECT ", "TRACE "}

// looksHTTP reports whether b may be the start of an HTTP/1.x request.
func looksHTTP(b []byte) bool {
	for _, m := range httpMethods {
		n := min(len(b), len(m))
		if string(b[:n]) == m[:n] {
			return true
		}
	}
	return false
}

// hostHeader returns the Host header of a request head, lower case and
// without port, or "".
func hostHeader(head []byte) string {
	lines := strings.Split(string(head), "\r\n")
	for _, l := range lines[1:] {
		k, v, ok := strings.Cut(l, ":")
		if !ok || !strings.EqualFold(strings.TrimSpace(k), "host") {
			continue
		}
		v = strings.TrimSpace(v)
		if h, _, err := net.SplitHostPort(v); err == nil {
			v = h
		}
		return strings.ToLower(strings.Trim(v, "[]"))
	}
	return ""
}

var errBadHello = errors.New("not a TLS ClientHello")

// clientHelloSNI returns the server name of a ClientHello handshake
// message (the body of a TLS record), "" when it has none. Every length is
// checked against what is there (RFC 8446 section 4.1.2, RFC 6066 section 3).
func clientHelloSNI(m []byte) (string, error) {
	r := reader(m)
	typ, ok := r.u8()
	if !ok || typ != 1 {
		return "", errBadHello
	}
	body, ok := r.vec(3)
	if !ok {
		return "", errBadHello // a hello split over records: no name
	}
	r = reader(body)
	if !r.skip(2 + 32) { // legacy_version, random
		return "", errBadHello
	}
	if _, ok := r.vec(1); !ok { // session id
		return "", errBadHello
	}
	if _, ok := r.vec(2); !ok { // cipher suites
		return "", errBadHello
	}
	if _, ok := r.vec(1); !ok { // compression methods
		return "", errBadHello
	}
	if len(r) == 0 {
		return "", nil // no extensions
	}
	exts, ok := r.vec(2)
	if !ok {
		return "", errBadHello
	}
	for len(exts) > 0 {
		typ, ok1 := exts.u16()
		data, ok2 := exts.vec(2)
		if !ok1 || !ok2 {
			return "", errBadHello
		}
		if typ != 0 { // server_name
			continue
		}
		list, ok := data.vec(2)
		for ok && len(list) > 0 {
			kind, ok1 := list.u8()
			name, ok2 := list.vec(2)
			if !ok1 || !ok2 {
				break
			}
			if kind == 0 { // host_name
				return strings.ToLower(strings.TrimSuffix(string(name), ".")), nil
			}
		}
		return "", errBadHello
	}
	return "", nil
}

// reader reads big-endian fields off a byte slice.
type reader []byte

func (r *reader) u8() (byte, bool) {
	if len(*r) < 1 {
		return 0, false
	}
	v := (*r)[0]
	*r = (*r)[1:]
	return v, true
}

func (r *reader) u16() (uint16, bool) {
	if len(*r) < 2 {
		return 0, false
	}
	v := uint16((*r)[0])<<8 | uint16((*r)[1])
	*r = (*r)[2:]
	return v, true
}

func (r *reader) skip(n int) bool {
	if len(*r) < n {
		return false
	}
	*r = (*r)[n:]
	return true
}

// vec reads a vector with an n-byte length prefix.
func (r *reader) vec(n int) (reader, bool) {
	if len(*r) < n {
		return nil, false
	}
	l := 0
	for _, b := range (*r)[:n] {
		l = l<<8 | int(b)
	}
	*r = (*r)[n:]
	if len(*r) < l {
		return nil, false
	}
	v := (*r)[:l]
	*r = (*r)[l:]
	return v, true
}

// tlsAlert writes a fatal TLS alert record (access_denied, RFC 8446 section
// 6.2) to w: the answer to a ClientHello for a rejected name, so that the
// client fails at once with a TLS error instead of a reset.
func tlsAlert(w io.Writer) error {
	_, err := w.Write([]byte{0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 49})
	return err
}
