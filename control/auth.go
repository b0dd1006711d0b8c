package control

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
)

// TokenRequired reports whether a control listener on addr ("host:port")
// must require a token: on anything but a loopback address. A wildcard
// (0.0.0.0, ::, "") reaches every interface, so it needs one too.
func TokenRequired(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	if strings.EqualFold(host, "localhost") {
		return false
	}
	a, err := netip.ParseAddr(host)
	return err != nil || !a.Unmap().IsLoopback()
}

// NewToken returns a random token of 128 bits, hex-encoded.
func NewToken() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// requestToken is the token a request carries: "Authorization: Bearer T",
// or ?token=T (for the dashboard's EventSource, which cannot set headers).
func requestToken(r *http.Request) string {
	if h := r.Header.Get("Authorization"); h != "" {
		if t, ok := strings.CutPrefix(h, "Bearer "); ok {
			return strings.TrimSpace(t)
		}
	}
	return r.URL.Query().Get("token")
}

// guard wraps h with the control plane's access checks:
//
//  1. a token, when one is set, compared in constant time;
//  2. no cross-site writes: a browser request whose Origin is not the
//     control address itself is refused, so a web page a tester visits
//     cannot switch scenarios through the tester's browser;
//  3. on loopback, a Host header that names a loopback address or
//     localhost, so that DNS rebinding cannot reach the API by a name.
func guard(token string, loopback bool, h http.Handler) http.Handler {
	want := []byte(token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if loopback && !loopbackHost(r.Host) {
			writeError(w, http.StatusForbidden, "the control API answers on loopback to loopback host names only (use http://127.0.0.1:PORT/)")
			return
		}
		if o := r.Header.Get("Origin"); o != "" {
			if u, err := url.Parse(o); err != nil || u.Host != r.Host {
				writeError(w, http.StatusForbidden, "cross-origin request refused")
				return
			}
		}
		if token != "" && subtle.ConstantTimeCompare([]byte(requestToken(r)), want) != 1 {
			if r.URL.Path == "/" || r.URL.Path == "/index.html" {
				w.Header().Set("Content-Type", "text/plain; charset=utf-8")
				w.WriteHeader(http.StatusUnauthorized)
				w.Write([]byte("unicorn control: this address needs the token unicorn printed at start: open /?token=TOKEN\n"))
				return
			}
			w.Header().Set("WWW-Authenticate", `Bearer realm="unicorn"`)
			writeError(w, http.StatusUnauthorized, "missing or wrong token: send Authorization: Bearer TOKEN (unicorn printed it at start; --control-token sets it)")
			return
		}
		h.ServeHTTP(w, r)
	})
}

func loopbackHost(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		host = hostport
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.Unmap().IsLoopback()
}
