package rules

import (
	"fmt"
	"net/http"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"
)

// contentKeys are the rule fields that match HTTP content. They are valid
// on any rule, inline or with service:, and make the proxy terminate TLS
// for the rule's hosts (when a CA is loaded) so that it can see them.
var contentKeys = []string{"methods", "paths", "request_headers"}

// pattern is a path or header value: exact, or a prefix when written with
// a trailing *.
type pattern struct {
	s      string
	prefix bool
	fold   bool // compare without regard to letter case
}

func parsePattern(s string, fold bool) pattern {
	if strings.HasSuffix(s, "*") {
		return pattern{s: s[:len(s)-1], prefix: true, fold: fold}
	}
	return pattern{s: s, fold: fold}
}

func (p pattern) match(v string) bool {
	if p.prefix {
		if len(v) < len(p.s) {
			return false
		}
		v = v[:len(p.s)]
	}
	if p.fold {
		return strings.EqualFold(v, p.s)
	}
	return v == p.s
}

func (p pattern) String() string {
	if p.prefix {
		return p.s + "*"
	}
	return p.s
}

type headerMatch struct {
	name  string // canonical form
	value pattern
}

// httpMatch is what a rule asks of an HTTP request beyond its destination.
// Each list that is given must match: one of the methods, one of the paths,
// and every header.
type httpMatch struct {
	methods []string // upper case
	paths   []pattern
	headers []headerMatch
	rpc     []string // JSON-RPC method names, one of which the body must call
}

// match reports whether the request f describes satisfies m. A flow that
// is not an HTTP request, or whose method, path or headers are not known
// where m asks about them, does not.
func (m *httpMatch) match(f *Flow) bool {
	if f.Layer != LayerHTTP {
		return false
	}
	if m.methods != nil {
		ok := false
		for _, x := range m.methods {
			if strings.EqualFold(f.Method, x) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	if m.paths != nil {
		if f.Path == "" {
			return false
		}
		ok := false
		for _, p := range m.paths {
			if p.match(f.Path) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	if m.headers != nil {
		if f.Header == nil {
			return false
		}
		for _, h := range m.headers {
			if !h.value.match(f.Header(h.name)) {
				return false
			}
		}
	}
	// Last: reading the methods may mean reading the request body.
	if m.rpc != nil {
		if f.RPCMethods == nil {
			return false
		}
		ok := false
		for _, called := range f.RPCMethods() {
			if slices.Contains(m.rpc, called) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

func (m *httpMatch) describe() string {
	var parts []string
	if len(m.methods) > 0 {
		parts = append(parts, "methods=["+strings.Join(m.methods, " ")+"]")
	}
	if len(m.paths) > 0 {
		ps := make([]string, len(m.paths))
		for i, p := range m.paths {
			ps[i] = p.String()
		}
		parts = append(parts, "paths=["+strings.Join(ps, " ")+"]")
	}
	if len(m.headers) > 0 {
		hs := make([]string, len(m.headers))
		for i, h := range m.headers {
			hs[i] = fmt.Sprintf("%s=%q", h.name, h.value.String())
		}
		parts = append(parts, "request_headers=["+strings.Join(hs, " ")+"]")
	}
	if len(m.rpc) > 0 {
		parts = append(parts, "jsonrpc=["+strings.Join(m.rpc, " ")+"]")
	}
	return strings.Join(parts, " ")
}

// isToken reports whether s is a non-empty HTTP token (RFC 9110), the form
// of methods and header names.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// decodeContent decodes one of the content fields into m.
func decodeContent(d *fileDecoder, m *httpMatch, key string, v *yaml.Node, path string) {
	switch key {
	case "methods":
		m.methods = []string{}
		d.strs(v, path, func(s string, n *yaml.Node, p string) {
			if !isToken(s) || s == "*" {
				d.errf(n, p, "%q is not an HTTP method (want e.g. GET, POST)", s)
				return
			}
			m.methods = append(m.methods, strings.ToUpper(s))
		})
		if len(v.Content) == 0 && v.Kind == yaml.SequenceNode {
			d.errf(v, path, "empty list matches no request (leave methods: out to match any method)")
		}
	case "paths":
		m.paths = []pattern{}
		d.strs(v, path, func(s string, n *yaml.Node, p string) {
			body := strings.TrimSuffix(s, "*")
			if !strings.HasPrefix(s, "/") || strings.Contains(body, "*") || strings.ContainsAny(s, " \t\r\n?#") {
				d.errf(n, p, "%q is not a path (want one starting with /, with * only at the end, e.g. /api or /v3/*)", s)
				return
			}
			m.paths = append(m.paths, parsePattern(s, false))
		})
		if len(v.Content) == 0 && v.Kind == yaml.SequenceNode {
			d.errf(v, path, "empty list matches no request (leave paths: out to match any path)")
		}
	case "jsonrpc":
		m.rpc = []string{}
		d.strs(v, path, func(s string, n *yaml.Node, p string) {
			if s == "" || strings.ContainsAny(s, " \t\r\n\"") {
				d.errf(n, p, "%q is not a JSON-RPC method name (want e.g. eth_sendRawTransaction)", s)
				return
			}
			m.rpc = append(m.rpc, s)
		})
		if len(v.Content) == 0 && v.Kind == yaml.SequenceNode {
			d.errf(v, path, "empty list matches no request (leave jsonrpc: out to match any call)")
		}
	case "request_headers":
		m.headers = []headerMatch{}
		if v.Kind != yaml.MappingNode {
			d.errf(v, path, "want a mapping of header names to values (e.g. {User-Agent: \"okhttp*\"}), got %s", kindName(v))
			return
		}
		if len(v.Content) == 0 {
			d.errf(v, path, "empty mapping matches no request (leave request_headers: out to match any headers)")
		}
		for i := 0; i+1 < len(v.Content); i += 2 {
			k, val := v.Content[i], v.Content[i+1]
			p := join(path, k.Value)
			if !isToken(k.Value) {
				d.errf(k, p, "%q is not a header name (want e.g. User-Agent)", k.Value)
				continue
			}
			s, ok := d.str(val, p)
			if !ok {
				continue
			}
			if strings.Contains(strings.TrimSuffix(s, "*"), "*") || strings.ContainsAny(s, "\r\n") {
				d.errf(val, p, "%q is not a header value pattern (want a value, with * only at the end, e.g. \"okhttp*\")", s)
				continue
			}
			name := http.CanonicalHeaderKey(k.Value)
			for _, h := range m.headers {
				if h.name == name {
					d.errf(k, p, "header %s is given twice", name)
				}
			}
			m.headers = append(m.headers, headerMatch{name: name, value: parsePattern(s, true)})
		}
	}
}
