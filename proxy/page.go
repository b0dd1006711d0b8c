package proxy

import (
	"bytes"
	"fmt"
	"html/template"
	"net"
	"net/http"
	"strconv"
	"time"
)

// PageInfo is what the landing page shows about the running unicorn.
type PageInfo struct {
	// Scenarios are the active scenarios, in the order to show them.
	Scenarios []ScenarioInfo
	// Blocked are the device's last blocked requests, newest first.
	// OPTIONAL: none shows a line saying so.
	Blocked []BlockedInfo
	// ProxyAddrs are "host:port" addresses a device can use as its HTTP
	// proxy, besides the one it reached the page on.
	ProxyAddrs []string
	// DNSAddrs are addresses a device can use as its DNS server.
	DNSAddrs []string
	// SOCKSAddrs are "host:port" addresses of the SOCKS5 listener, for
	// desktop apps; empty when it is off.
	SOCKSAddrs []string
	// CA is the certificate authority devices install to let unicorn
	// intercept HTTPS. OPTIONAL: nil means none is configured, and the page
	// says so and /ca.pem, /ca.der and /ca.mobileconfig answer 404. Leave
	// it nil rather than holding a nil *certs.CA, which is not a nil PageCA.
	CA PageCA
}

// PageCA is the CA as the landing page offers it for download;
// *certs.CA implements it.
type PageCA interface {
	PEM() []byte                   // served at /ca.pem
	DER() []byte                   // served at /ca.der
	MobileConfig() ([]byte, error) // served at /ca.mobileconfig
	Fingerprint() string           // SHA-256, shown for comparison on the device
}

// ScenarioInfo describes one active scenario on the landing page.
type ScenarioInfo struct {
	Name        string
	Description string
	// Services are the names of the services the scenario acts on.
	Services []string
	// Until is when a timed switch turns the scenario back; zero: until
	// someone switches it.
	Until time.Time
}

// BlockedInfo is one request of the device that unicorn stopped or
// answered in its place.
type BlockedInfo struct {
	Time     time.Time
	Target   string // name or address, with the port at connection layers
	Layer    string // dns, http, tls, tcp, udp, socks
	Outcome  string // what the device got: "NXDOMAIN", "403 page"
	Scenario string
	Rule     string // file:line
}

// pageData is what the landing page template renders.
type pageData struct {
	PageInfo
	Host, Port string // the proxy address a phone should use
	PACURL     string
	DNS        []dnsHint
	// PageURL is this page at Host:Port, and QR its QR code; both are
	// empty when Host is loopback, which a phone cannot reach.
	PageURL     string
	QR          template.HTML
	Fingerprint string // the CA's, or "" without a CA
}

// noCAHint is what the CA paths answer when no CA is configured.
const noCAHint = "no CA is configured: run `unicorn ca init` on the unicorn machine, then restart unicorn\n"

// caFiles are the CA downloads: the path, the content type a phone acts
// on, and the file name the download is saved under.
var caFiles = map[string]struct{ typ, name string }{
	"/ca.pem":          {"application/x-pem-file", "unicorn-ca.pem"},
	"/ca.der":          {"application/x-x509-ca-cert", "unicorn-ca.der"},
	"/ca.mobileconfig": {"application/x-apple-aspen-config", "unicorn-ca.mobileconfig"},
}

// phoneHostPort returns the proxy address a phone should use: the one
// the request came in on or, when that is loopback (the page was opened on
// the unicorn machine itself), the first routable one of others. ok is
// false when only loopback addresses are known.
func phoneHostPort(host, port string, others []string) (h, p string, ok bool) {
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return host, port, true
	}
	for _, a := range others {
		h, p, err := net.SplitHostPort(a)
		if err != nil {
			continue
		}
		if ip := net.ParseIP(h); ip != nil && (ip.IsLoopback() || ip.IsUnspecified()) {
			continue
		}
		return h, p, true
	}
	return host, port, false
}

// dnsHint is a DNS server address as a device should enter it.
type dnsHint struct {
	Addr string // an address the device can reach
	Note string // why it may not work for a phone, or ""
}

// dnsHints turns listen addresses into what a device enters: a wildcard
// listener is shown as the address the device reached the proxy on, and a
// port other than 53 is flagged, since phones cannot set a DNS port.
func dnsHints(addrs []string, reached string) []dnsHint {
	var hints []dnsHint
	for _, a := range addrs {
		host, port, err := net.SplitHostPort(a)
		if err != nil {
			continue
		}
		if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
			host = reached
		}
		h := dnsHint{Addr: host}
		if port != "53" {
			h.Addr = net.JoinHostPort(host, port)
			h.Note = "phones can only use port 53: start unicorn with --dns 0.0.0.0:53"
		}
		hints = append(hints, h)
	}
	return hints
}

var pageTemplate = template.Must(template.New("page").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>unicorn</title>
<style>body{font-family:system-ui,sans-serif;margin:1em auto;padding:0 1em;max-width:40em;line-height:1.45;font-size:17px}
h1{margin:.2em 0}h2{font-size:1.2em;margin:1.2em 0 .4em;border-bottom:1px solid #ccc}h3{font-size:1em;margin:.8em 0 .3em}
code,pre{background:#eee;padding:0 .2em;overflow-wrap:anywhere}pre{padding:.5em;overflow-x:auto;font-size:.85em;white-space:pre}
li{margin:.3em 0}ol,ul{padding-left:1.3em}.scan{display:flex;gap:1em;align-items:center}.scan p{min-width:0;overflow-wrap:anywhere}.qr{flex:none;width:9em;height:9em}
.fp{font-family:monospace;font-size:.85em;overflow-wrap:anywhere}a.dl{display:inline-block;padding:.4em .8em;margin:.2em .3em .2em 0;border:1px solid #888;border-radius:.3em;text-decoration:none}</style></head>
<body><h1>unicorn</h1>
<p>This machine makes chosen services fail for the devices that use it.</p>
<h2>Active for this device now</h2>
{{- if .Scenarios}}<ul>
{{- range .Scenarios}}
<li><b>{{.Name}}</b>{{if .Description}}: {{.Description}}{{end}}
{{- if .Services}}<br><small>services: {{range $i, $s := .Services}}{{if $i}}, {{end}}{{$s}}{{end}}</small>{{end}}
{{- if not .Until.IsZero}}<br><small>until {{.Until.Format "15:04:05"}}</small>{{end}}</li>
{{- end}}
</ul>
{{- else}}<p>None: traffic passes untouched.</p>{{end}}
<h2>Your last blocked requests</h2>
{{- if .Blocked}}<ul class="blocked">
{{- range .Blocked}}
<li><small>{{.Time.Format "15:04:05"}}</small> <code>{{.Target}}</code> ({{.Layer}}): <b>{{.Outcome}}</b>{{if .Scenario}}, by {{.Scenario}} ({{.Rule}}){{end}}</li>
{{- end}}
</ul>
{{- else}}<p>None so far: nothing this device asked for was blocked.</p>{{end}}
<h2>Open this page on the phone</h2>
{{- if .PageURL}}<div class="scan">{{.QR}}<p>Scan with the phone's camera to open <a href="{{.PageURL}}">{{.PageURL}}</a> there.</p></div>
{{- else}}<p>This page was opened on the unicorn machine itself. On the phone, open
<code>http://</code><i>this machine's Wi-Fi address</i><code>:{{.Port}}/</code>;
unicorn must listen on it (<code>--proxy 0.0.0.0:{{.Port}}</code>).</p>{{end}}
<h2>Point a phone here</h2>
<p><b>HTTP proxy:</b> Wi-Fi settings → this network → HTTP proxy → Manual:
server <code>{{.Host}}</code>, port <code>{{.Port}}</code>.
Or Automatic, with <code>{{.PACURL}}</code>.</p>
{{- if .ProxyAddrs}}<p>Other proxy addresses:{{range .ProxyAddrs}} <code>{{.}}</code>{{end}}</p>{{end}}
{{- if .SOCKSAddrs}}<p><b>SOCKS5</b> (desktop apps and programs that honour <code>ALL_PROXY=socks5h://</code><i>address</i>):{{range .SOCKSAddrs}} <code>{{.}}</code>{{end}}</p>{{end}}
{{- if .DNS}}<p><b>DNS:</b> Wi-Fi settings → this network → DNS → Manual:{{range .DNS}} <code>{{.Addr}}</code>{{if .Note}} ({{.Note}}){{end}}{{end}}</p>{{end}}
<p><b>Router mode</b> (for apps that ignore the proxy or dial addresses directly):
Wi-Fi settings → this network → IP settings → Static: gateway <code>{{.Host}}</code>
and DNS <code>{{.Host}}</code>, with an unused address on the same network.</p>
<h2>Trust the unicorn CA (for HTTPS)</h2>
{{- if .Fingerprint}}
<p><a class="dl" href="/ca.pem">ca.pem</a><a class="dl" href="/ca.der">ca.der</a><a class="dl" href="/ca.mobileconfig">ca.mobileconfig</a></p>
<p>SHA-256 fingerprint; compare it with the one the phone shows:<br><span class="fp">{{.Fingerprint}}</span></p>
<h3>Android</h3>
<ol><li>Download <a href="/ca.pem">ca.pem</a>.</li>
<li>Settings → Security → Encryption &amp; credentials → Install a certificate → CA certificate → pick <code>unicorn-ca.pem</code>.</li>
<li>Apps trust user CAs only if they opt in. For a debug build, add <code>res/xml/network_security_config.xml</code>
and <code>android:networkSecurityConfig="@xml/network_security_config"</code> on <code>&lt;application&gt;</code>:</li></ol>
<pre>&lt;network-security-config&gt;
  &lt;debug-overrides&gt;
    &lt;trust-anchors&gt;
      &lt;certificates src="user" /&gt;
    &lt;/trust-anchors&gt;
  &lt;/debug-overrides&gt;
&lt;/network-security-config&gt;</pre>
<h3>iOS</h3>
<ol><li>Open <a href="/ca.mobileconfig">ca.mobileconfig</a> in Safari → Allow.</li>
<li>Settings → Profile Downloaded → Install.</li>
<li>Settings → General → About → Certificate Trust Settings → enable full trust for the unicorn CA.</li></ol>
{{- else}}
<p>No CA is configured, so there is nothing to install and HTTPS cannot be intercepted.
Run <code>unicorn ca init</code> on the unicorn machine, then restart unicorn.</p>
{{- end}}
</body></html>
`))

// servePage serves requests made to the proxy itself rather than through
// it: the landing page at "/", a PAC file at "/proxy.pac" and the CA at
// "/ca.pem", "/ca.der" and "/ca.mobileconfig".
func (p *Proxy) servePage(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	host, port := localHostPort(r)
	var info PageInfo
	if p.info != nil && r.URL.Path != "/proxy.pac" {
		info = p.info(clientAddr(r))
	}
	switch r.URL.Path {
	case "/":
		d := pageData{PageInfo: info}
		var routable bool
		d.Host, d.Port, routable = phoneHostPort(host, port, info.ProxyAddrs)
		hp := net.JoinHostPort(d.Host, d.Port)
		d.PACURL = "http://" + hp + "/proxy.pac"
		d.DNS = dnsHints(d.DNSAddrs, d.Host)
		if routable {
			d.PageURL = "http://" + hp + "/"
			var err error
			if d.QR, err = qrSVG(d.PageURL); err != nil {
				p.log.Error("landing page QR code", "url", d.PageURL, "err", err)
			}
		}
		if d.CA != nil {
			d.Fingerprint = d.CA.Fingerprint()
		}
		var b bytes.Buffer
		if err := pageTemplate.Execute(&b, d); err != nil {
			p.log.Error("landing page", "err", err)
			http.Error(w, "internal error", http.StatusInternalServerError)
			return
		}
		writeNoStore(w, "text/html; charset=utf-8", b.Bytes())
	case "/proxy.pac":
		// No DIRECT fallback: a device that silently bypassed an
		// unreachable unicorn would see no faults and not know why.
		pac := fmt.Sprintf("function FindProxyForURL(url, host) {\n  return %q;\n}\n",
			"PROXY "+net.JoinHostPort(host, port))
		writeNoStore(w, "application/x-ns-proxy-autoconfig", []byte(pac))
	case "/ca.pem", "/ca.der", "/ca.mobileconfig":
		if info.CA == nil {
			http.Error(w, noCAHint, http.StatusNotFound)
			return
		}
		var body []byte
		switch r.URL.Path {
		case "/ca.pem":
			body = info.CA.PEM()
		case "/ca.der":
			body = info.CA.DER()
		default:
			var err error
			if body, err = info.CA.MobileConfig(); err != nil {
				p.log.Error("CA profile", "err", err)
				http.Error(w, "internal error", http.StatusInternalServerError)
				return
			}
		}
		f := caFiles[r.URL.Path]
		w.Header().Set("Content-Disposition", `attachment; filename="`+f.name+`"`)
		writeNoStore(w, f.typ, body)
	default:
		http.NotFound(w, r)
	}
}

// writeNoStore sends body as an uncached 200 response of content type typ.
func writeNoStore(w http.ResponseWriter, typ string, body []byte) {
	w.Header().Set("Content-Type", typ)
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.Write(body)
}

// localHostPort is the address the device reached the proxy on: the
// local end of its connection, which is an address it can route to.
func localHostPort(r *http.Request) (host, port string) {
	if a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		if h, p, err := net.SplitHostPort(a.String()); err == nil {
			return h, p
		}
	}
	if h, p, err := net.SplitHostPort(r.Host); err == nil {
		return h, p
	}
	return r.Host, "80"
}
