package capture

import (
	"fmt"
	"html/template"
	"io"
	"strings"
)

// WriteHTML writes the report as one self-contained page: inline CSS and
// an inline SVG timeline of attempts per device and service; it loads
// nothing from the network.
func (r *Report) WriteHTML(w io.Writer) error {
	return pageTmpl.Execute(w, page{Report: r, Timeline: r.timeline()})
}

const (
	plotLeft  = 260
	plotWidth = 900
	rowHeight = 18
	maxRows   = 300
)

type plotRow struct {
	Label string
	Y     int
	Marks []plotMark
}

type plotMark struct {
	X, Y  float64
	Class string
	Title string
}

type plot struct {
	Width, Height, Left, Right int
	Rows                       []plotRow
	Ticks                      []plotTick
	Span                       float64
}

type plotTick struct {
	X     float64
	Label string
}

// timeline lays out the attempts of every device and service.
func (r *Report) timeline() plot {
	span := r.Stats.Last.Sub(r.Stats.First).Seconds()
	if span <= 0 {
		span = 1
	}
	p := plot{Left: plotLeft, Right: plotLeft + plotWidth, Width: plotLeft + plotWidth + 20, Span: span}
	y := 30
	for _, d := range r.Devices {
		for _, g := range d.Services {
			if len(p.Rows) == maxRows || len(g.Timeline) == 0 {
				continue
			}
			row := plotRow{Label: fmt.Sprintf("%s  %s", d.Addr, g.Target), Y: y}
			for _, a := range g.Timeline {
				row.Marks = append(row.Marks, plotMark{
					X: float64(plotLeft) + a.T/span*plotWidth, Y: float64(y) - 4,
					Class: markClass(a), Title: fmt.Sprintf("%.3fs %s %s: %s", a.T, a.Kind, a.Dest, a.Outcome),
				})
			}
			p.Rows = append(p.Rows, row)
			y += rowHeight
		}
	}
	p.Height = y + 10
	for i := 0; i <= 5; i++ {
		t := span * float64(i) / 5
		p.Ticks = append(p.Ticks, plotTick{X: float64(plotLeft) + float64(i)/5*plotWidth, Label: fmt.Sprintf("%.1fs", t)})
	}
	return p
}

func markClass(a Attempt) string {
	kind := "k-" + a.Kind
	switch a.Outcome {
	case "connected", "answered", "NOERROR":
		return kind + " ok"
	case "no answer":
		return kind + " hang"
	}
	return kind + " fail"
}

var pageTmpl = template.Must(template.New("page").Funcs(template.FuncMap{
	"backoff": backoffString,
	"names":   namesString,
	"join":    strings.Join,
	"size":    sizeString,
}).Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>unicorn capture report{{with .File}}: {{.}}{{end}}</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: .5em 0; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.n { text-align: right; }
.verdict { padding: .6em 1em; border-radius: 4px; font-weight: bold; display: inline-block; }
.noleak { background: #e3f6e3; color: #145214; } .leak { background: #fde2e2; color: #8a1010; }
.blocked { color: #8a1010; } .muted { color: #777; }
svg text { font: 11px monospace; fill: #333; }
svg .ok { fill: #2a9d3a; } svg .fail { fill: #d33; } svg .hang { fill: #999; }
svg .grid { stroke: #e5e5e5; } svg .k-dns { opacity: .75; }
</style>
</head>
<body>
<h1>What the devices tried{{with .File}} <span class="muted">{{.}}</span>{{end}}</h1>
<p>{{.Stats.Packets}} packets, {{size .Stats.Bytes}}, from {{.Stats.First.UTC.Format "2006-01-02 15:04:05.000 UTC"}} to {{.Stats.Last.UTC.Format "15:04:05.000"}}.
{{if or .Stats.Malformed .Stats.Truncated .Stats.FileError}}Malformed {{.Stats.Malformed}}, truncated {{.Stats.Truncated}}{{with .Stats.FileError}}; reading stopped: {{.}}{{end}}.{{end}}
Scenario: {{if .Scenarios}}{{join .Scenarios ", "}}{{else}}none (no verdicts){{end}}; capture taken on the {{.Side}} side.</p>
{{if .Scenarios}}{{if .Leaks}}
<p class="verdict leak">{{.LeakCount}} leak(s): {{.LeakPackets}} packet(s) got past a blocking rule</p>
<table><tr><th>time</th><th>device</th><th>target</th><th>destination</th><th>name</th><th>rule</th><th>why</th><th>packets</th></tr>
{{range .Leaks}}<tr><td class="n">{{printf "%.3f" .T}}s</td><td>{{.Device}}</td><td>{{.Target}}</td><td>{{.Dest}}</td><td>{{.Name}}</td><td>{{.Rule}}</td><td>{{.Reason}}</td><td class="n">{{.Packets}}</td></tr>
{{end}}</table>
{{else}}<p class="verdict noleak">No leaks: nothing reached a destination the scenario blocks.</p>{{end}}{{end}}
<h2>Timeline of attempts</h2>
<p class="muted">One row per device and service; green: connected or answered, red: refused or an error answer, grey: no answer. Hover a mark for details.</p>
{{with .Timeline}}<svg width="{{.Width}}" height="{{.Height}}" viewBox="0 0 {{.Width}} {{.Height}}" role="img" aria-label="attempts over time">
{{range .Ticks}}<line class="grid" x1="{{.X}}" y1="20" x2="{{.X}}" y2="{{$.Timeline.Height}}"/><text x="{{.X}}" y="14" text-anchor="middle">{{.Label}}</text>
{{end}}{{range .Rows}}<text x="4" y="{{.Y}}">{{.Label}}</text>
{{range .Marks}}<circle class="{{.Class}}" cx="{{printf "%.1f" .X}}" cy="{{printf "%.1f" .Y}}" r="4"><title>{{.Title}}</title></circle>
{{end}}{{end}}</svg>{{end}}
{{range .Devices}}
<h2>Device {{.Addr}}{{if .Leaks}} <span class="blocked">({{.Leaks}} leaks)</span>{{end}}</h2>
<table><tr><th>target</th><th>verdict</th><th>attempts</th><th>TCP / UDP / DNS</th><th>retries</th><th>connected / refused / no answer</th><th>back-off</th><th>names</th><th>fallbacks</th><th>leaks</th></tr>
{{range .Services}}<tr><td>{{.Target}}</td><td{{if ne .Verdict "allow"}} class="blocked"{{end}} title="{{.Rule}}">{{.Verdict}}</td><td class="n">{{.Attempts}}</td><td class="n">{{.TCP}} / {{.UDP}} / {{.DNS}}</td><td class="n">{{.Retries}}</td><td class="n">{{.Connected}} / {{.Refused}} / {{.Unanswered}}</td><td>{{backoff .Backoff}}</td><td>{{names .Names}}</td><td>{{join .Fallbacks ", "}}</td><td class="n">{{.Leaks}}</td></tr>
{{end}}</table>
{{with .Resolvers}}<p>Resolvers: {{range $i, $r := .}}{{if $i}}; {{end}}{{$r.Addr}} ({{$r.Queries}} queries, {{if $r.Expected}}expected{{else}}<span class="blocked">hard-coded</span>{{end}}){{end}}</p>{{end}}
{{with .DoT}}<p>DNS over TLS: {{range $i, $e := .}}{{if $i}}; {{end}}{{$e.Dest}} {{$e.Name}} ({{$e.Flows}} flows){{end}}</p>{{end}}
{{with .DoH}}<p>DNS over HTTPS: {{range $i, $e := .}}{{if $i}}; {{end}}{{$e.Dest}} {{$e.Name}} ({{$e.Flows}} flows){{end}}</p>{{end}}
{{with .QUIC}}<p>QUIC: {{range $i, $e := .}}{{if $i}}; {{end}}{{$e.Dest}} {{$e.Name}} ({{$e.Flows}} flows){{end}}</p>{{end}}
{{end}}
</body>
</html>
`))

// page is what the template sees.
type page struct {
	*Report
	Timeline plot
}
