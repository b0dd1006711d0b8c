package testbed

import (
	"net/http"
	"strconv"
)

// SiteBody is what the fake example.org serves.
const SiteBody = "<!doctype html>\n<title>Example Domain</title>\n<p>This domain is for use in unicorn's testbed.</p>\n"

// Site returns a handler that answers every GET and HEAD with body as
// text/html, and 405 to other methods.
func Site(body string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		if r.Method == http.MethodGet {
			w.Write([]byte(body))
		}
	})
}
