package proxy

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/chaos-unicorn/unicorn/rules"
)

// The headers that tell a tester which rule refused a request.
const (
	HeaderScenario = "X-Unicorn-Scenario"
	HeaderRule     = "X-Unicorn-Rule"   // rules.Rule.Ref()
	HeaderAction   = "X-Unicorn-Action" // rules.Action.String()
)

// blockPage is what a refused request sees: a short text page, and headers,
// naming the scenario and the rule.
type blockPage struct {
	status int
	header http.Header
	body   string
}

// newBlockPage returns the page for a request to host that decision d
// refused with status.
func newBlockPage(status int, host string, d rules.Decision) blockPage {
	ref := "no rule"
	if d.Rule != nil {
		ref = d.Rule.Ref()
	}
	var b strings.Builder
	switch d.Action {
	case rules.ActionSinkhole:
		fmt.Fprintf(&b, "unicorn sinkholed %s\n", host)
	default:
		fmt.Fprintf(&b, "unicorn refused %s\n", host)
	}
	fmt.Fprintf(&b, "scenario: %s\nrule: %s\naction: %s\n", d.Scenario(), ref, d.Action)
	h := http.Header{}
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Length", strconv.Itoa(b.Len()))
	h.Set(HeaderScenario, d.Scenario())
	h.Set(HeaderRule, ref)
	h.Set(HeaderAction, d.Action.String())
	return blockPage{status: status, header: h, body: b.String()}
}

// response returns the page as a canned response to req, for goproxy.
func (bp blockPage) response(req *http.Request) *http.Response {
	return &http.Response{
		Status:        fmt.Sprintf("%d %s", bp.status, http.StatusText(bp.status)),
		StatusCode:    bp.status,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        bp.header.Clone(),
		Body:          io.NopCloser(strings.NewReader(bp.body)),
		ContentLength: int64(len(bp.body)),
		Request:       req,
	}
}

// write sends the page on w and asks the server to close the connection
// after it, as a refused CONNECT must.
func (bp blockPage) write(w http.ResponseWriter) {
	h := w.Header()
	for k, v := range bp.header {
		h[k] = v
	}
	h.Set("Connection", "close")
	w.WriteHeader(bp.status)
	io.WriteString(w, bp.body)
}

// textResponse is a plain-text response to req for errors that no rule
// caused (bad target, unreachable upstream).
func textResponse(req *http.Request, status int, text string) *http.Response {
	bp := blockPage{status: status, header: http.Header{}, body: text + "\n"}
	bp.header.Set("Content-Type", "text/plain; charset=utf-8")
	bp.header.Set("Content-Length", strconv.Itoa(len(bp.body)))
	return bp.response(req)
}
