package proxy

import (
	"bytes"
	"fmt"
	"html/template"
	"net"
	"net/http"
	"strconv"
)

// PageInfo is what the landing page shows about the running unicorn.
type PageInfo struct {
	// Scenarios are the active scenarios, in the order to show them.
	Scenarios []ScenarioInfo
	// ProxyAddrs are "host:port" addresses a device can use as its HTTP
	// proxy, besides the one it reached the page on.
	ProxyAddrs []string
	// DNSAddrs are addresses a device can use as its DNS server.
	DNSAddrs []string
}

// ScenarioInfo describes one active scenario on the landing page.
type ScenarioInfo struct {
	Name        string
	Description string
	// Services are the names of the services the scenario acts on.
	Services []string
}

// pageData is what the landing page template renders.
type pageData struct {
	PageInfo
	Host, Port string // the proxy address the device reached
	PACURL     string
	DNS        []dnsHint
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
<style>body{font-family:system-ui,sans-serif;margin:1em;max-width:40em;line-height:1.4}
code{background:#eee;padding:0 .2em}li{margin:.3em 0}</style></head>
<body><h1>unicorn</h1>
<p>This machine makes chosen services fail for the devices that use it.</p>
<h2>Active scenarios</h2>
{{- if .Scenarios}}<ul>
{{- range .Scenarios}}
<li><b>{{.Name}}</b>{{if .Description}}: {{.Description}}{{end}}
{{- if .Services}}<br><small>services: {{range $i, $s := .Services}}{{if $i}}, {{end}}{{$s}}{{end}}</small>{{end}}</li>
{{- end}}
</ul>
{{- else}}<p>None: traffic passes untouched.</p>{{end}}
<h2>Point a phone here</h2>
<p><b>HTTP proxy:</b> Wi-Fi settings → this network → HTTP proxy → Manual:
server <code>{{.Host}}</code>, port <code>{{.Port}}</code>.
Or Automatic, with <code>{{.PACURL}}</code>.</p>
{{- if .ProxyAddrs}}<p>Other proxy addresses:{{range .ProxyAddrs}} <code>{{.}}</code>{{end}}</p>{{end}}
{{- if .DNS}}<p><b>DNS:</b> Wi-Fi settings → this network → DNS → Manual:{{range .DNS}} <code>{{.Addr}}</code>{{if .Note}} ({{.Note}}){{end}}{{end}}</p>{{end}}
</body></html>
`))

// servePage serves requests made to the proxy itself rather than through
// it: the landing page at "/" and a PAC file at "/proxy.pac".
func (p *Proxy) servePage(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	host, port := localHostPort(r)
	switch r.URL.Path {
	case "/":
		d := pageData{Host: host, Port: port,
			PACURL: "http://" + net.JoinHostPort(host, port) + "/proxy.pac"}
		if p.info != nil {
			d.PageInfo = p.info()
		}
		d.DNS = dnsHints(d.DNSAddrs, host)
		var b bytes.Buffer
		if err := pageTemplate.Execute(&b, d); err != nil {
			p.log.Error("landing page", "err", err)
			http.Error(w, "internal error", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("Content-Length", strconv.Itoa(b.Len()))
		w.Write(b.Bytes())
	case "/proxy.pac":
		// No DIRECT fallback: a device that silently bypassed an
		// unreachable unicorn would see no faults and not know why.
		pac := fmt.Sprintf("function FindProxyForURL(url, host) {\n  return %q;\n}\n",
			"PROXY "+net.JoinHostPort(host, port))
		w.Header().Set("Content-Type", "application/x-ns-proxy-autoconfig")
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("Content-Length", strconv.Itoa(len(pac)))
		w.Write([]byte(pac))
	default:
		http.NotFound(w, r)
	}
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
