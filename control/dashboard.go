package control

import (
	_ "embed"
	"net/http"
)

// dashboardHTML is the whole dashboard: one page, its script inline, no
// build step. It talks to the API with the token from its own URL.
//
//go:embed dashboard.html
var dashboardHTML []byte

func (s *Server) dashboard(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Security-Policy", "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'")
	h.Set("X-Frame-Options", "DENY")
	w.Write(dashboardHTML)
}
