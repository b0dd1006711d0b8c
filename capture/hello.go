package capture

import (
	"bytes"
	"encoding/binary"
)

// serverName returns the SNI of a TLS ClientHello that starts payload, or
// "" when payload is not one (or the hello is split over segments).
func serverName(b []byte) string {
	// TLS record: type 22 (handshake), version, length; then the handshake
	// header: type 1 (ClientHello), 3-byte length.
	if len(b) < 5+4 || b[0] != 22 || b[1] != 3 {
		return ""
	}
	b = b[5:]
	if b[0] != 1 {
		return ""
	}
	b = b[4:]
	// client_version(2) random(32) session_id(1+n)
	if len(b) < 35 {
		return ""
	}
	b = b[34:]
	n := int(b[0])
	if len(b) < 1+n+2 {
		return ""
	}
	b = b[1+n:]
	n = int(binary.BigEndian.Uint16(b)) // cipher_suites
	if len(b) < 2+n+1 {
		return ""
	}
	b = b[2+n:]
	n = int(b[0]) // compression_methods
	if len(b) < 1+n+2 {
		return ""
	}
	b = b[1+n:]
	ext := int(binary.BigEndian.Uint16(b))
	b = b[2:]
	if ext < len(b) {
		b = b[:ext]
	}
	for len(b) >= 4 {
		typ, l := binary.BigEndian.Uint16(b), int(binary.BigEndian.Uint16(b[2:]))
		b = b[4:]
		if l > len(b) {
			return ""
		}
		if typ == 0 { // server_name: list length(2), type(1)=host_name, length(2), name
			e := b[:l]
			if len(e) < 5 || e[2] != 0 {
				return ""
			}
			nl := int(binary.BigEndian.Uint16(e[3:]))
			if 5+nl > len(e) || nl == 0 {
				return ""
			}
			return cleanName(e[5 : 5+nl])
		}
		b = b[l:]
	}
	return ""
}

var httpMethods = [][]byte{
	[]byte("GET "), []byte("POST "), []byte("PUT "), []byte("HEAD "),
	[]byte("DELETE "), []byte("OPTIONS "), []byte("PATCH "), []byte("CONNECT "),
}

// httpHost returns the Host of an HTTP/1 request that starts payload, or ""
// (the authority for CONNECT).
func httpHost(b []byte) string {
	isReq := false
	for _, m := range httpMethods {
		if bytes.HasPrefix(b, m) {
			isReq = true
			break
		}
	}
	if !isReq {
		return ""
	}
	if len(b) > 4096 {
		b = b[:4096]
	}
	if bytes.HasPrefix(b, []byte("CONNECT ")) {
		line := b[len("CONNECT "):]
		if i := bytes.IndexByte(line, ' '); i > 0 {
			return cleanName(stripPort(line[:i]))
		}
		return ""
	}
	for {
		i := bytes.Index(b, []byte("\r\n"))
		if i < 0 {
			return ""
		}
		b = b[i+2:]
		if len(b) >= 5 && (b[0]|0x20) == 'h' && (b[1]|0x20) == 'o' && (b[2]|0x20) == 's' && (b[3]|0x20) == 't' && b[4] == ':' {
			v := bytes.TrimSpace(b[5:])
			if j := bytes.Index(v, []byte("\r\n")); j >= 0 {
				v = bytes.TrimSpace(v[:j])
			}
			return cleanName(stripPort(v))
		}
		if len(b) >= 2 && b[0] == '\r' && b[1] == '\n' {
			return ""
		}
	}
}

func stripPort(h []byte) []byte {
	if len(h) > 0 && h[0] == '[' {
		if i := bytes.IndexByte(h, ']'); i > 0 {
			return h[1:i]
		}
		return h
	}
	if i := bytes.LastIndexByte(h, ':'); i >= 0 && bytes.IndexByte(h[:i], ':') < 0 {
		return h[:i]
	}
	return h
}

// cleanName lowercases a name and drops a trailing dot; "" when it holds
// bytes no host name has.
func cleanName(b []byte) string {
	b = bytes.TrimSuffix(b, []byte("."))
	if len(b) == 0 || len(b) > 253 {
		return ""
	}
	out := make([]byte, len(b))
	for i, c := range b {
		switch {
		case c >= 'A' && c <= 'Z':
			c += 'a' - 'A'
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '.', c == '_', c == ':':
		default:
			return ""
		}
		out[i] = c
	}
	return string(out)
}
