package proxy

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net/netip"
	"testing"
)

// encodeRequest is the wire form of r, as a client would send it.
func encodeRequest(r socksRequest) []byte {
	b := []byte{socksVersion, r.cmd, 0}
	if r.host != "" {
		b = append(append(b, socksAtypDomain, byte(len(r.host))), r.host...)
		return binary.BigEndian.AppendUint16(b, r.port)
	}
	return appendAddr(b, netip.AddrPortFrom(r.addr, r.port))
}

// FuzzReadRequest: any bytes give a request or an error, never a panic;
// the parser reads no more than the longest request; a request it accepts
// reads back the same after encoding.
func FuzzReadRequest(f *testing.F) {
	for _, s := range [][]byte{
		{5, 1, 0, 1, 127, 0, 0, 1, 0, 80},
		append([]byte{5, 1, 0, 3, 16}, "api.example.test\x01\xbb"...),
		{5, 3, 0, 4, 0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 53},
		{5, 2, 0, 1, 1, 2, 3, 4, 0, 1},
		{5, 1, 0, 3, 255, 'a'},
		{5, 1, 0, 9},
		{4, 1},
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r := bytes.NewReader(b)
		req, err := readRequest(r)
		if read := len(b) - r.Len(); read > 4+1+255+2 {
			t.Fatalf("read %d bytes", read)
		}
		var se *socksError
		if err != nil {
			if !errors.As(err, &se) && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("unexpected error type %T: %v", err, err)
			}
			return
		}
		if (req.host == "") == !req.addr.IsValid() || req.port == 0 && req.cmd == socksCmdConnect {
			t.Fatalf("accepted %+v", req)
		}
		again, err := readRequest(bytes.NewReader(encodeRequest(req)))
		if err != nil || again != req {
			t.Fatalf("%+v encodes to a request read as %+v, %v", req, again, err)
		}
	})
}

// FuzzParseDatagram: any bytes give a destination and a payload that is
// the datagram's tail, or an error; never a panic.
func FuzzParseDatagram(f *testing.F) {
	for _, s := range [][]byte{
		{0, 0, 0, 1, 127, 0, 0, 1, 0, 53, 'q'},
		append([]byte{0, 0, 0, 3, 4}, "a.bc\x00\x35hello"...),
		{0, 0, 1, 1, 127, 0, 0, 1, 0, 53},
		{0, 0, 0, 4, 1},
		{0, 0, 0, 3, 200, 'x'},
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		dst, payload, err := parseDatagram(b)
		if err != nil {
			return
		}
		if len(payload) > len(b) || !bytes.Equal(b[len(b)-len(payload):], payload) {
			t.Fatalf("payload % x is not the tail of % x", payload, b)
		}
		if (dst.host == "") == !dst.addr.IsValid() || dst.port == 0 {
			t.Fatalf("accepted %+v", dst)
		}
		if dst.addr.IsValid() {
			// The reply header for a datagram from dst reads back as dst.
			var hdr [maxDatagramHeader]byte
			start := putDatagramHeader(hdr[:], netip.AddrPortFrom(dst.addr, dst.port))
			back, rest, err := parseDatagram(hdr[start:])
			if err != nil || len(rest) != 0 || back.addr != dst.addr.Unmap() || back.port != dst.port {
				t.Fatalf("header for %+v reads back as %+v %v", dst, back, err)
			}
		}
	})
}
