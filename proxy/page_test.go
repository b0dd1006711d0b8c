package proxy_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"regexp"
	"strings"
	"testing"

	"rsc.io/qr"

	"github.com/chaos-unicorn/unicorn/certs"
	"github.com/chaos-unicorn/unicorn/proxy"
)

// phoneAddr is the routable proxy address the page offers when it is
// opened on loopback, as the tests open it.
const phoneAddr = "192.0.2.7:8080"

// getDirect GETs path from the proxy itself, not through it.
func getDirect(t *testing.T, w *world, path string) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.Get("http://" + w.Addr + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

func newCA(t *testing.T) *certs.CA {
	t.Helper()
	ca, err := certs.New(certs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func TestPageWithCA(t *testing.T) {
	ca := newCA(t)
	w := newWorld(t, worldConfig{Info: func(netip.Addr) proxy.PageInfo {
		return proxy.PageInfo{ProxyAddrs: []string{"127.0.0.1:8080", phoneAddr}, CA: ca}
	}})
	_, b := getDirect(t, w, "/")
	body := string(b)
	pageURL := "http://" + phoneAddr + "/"
	for _, s := range []string{
		`<svg class="qr"`, `aria-label="QR code for ` + pageURL + `"`,
		`to open <a href="` + pageURL + `">` + pageURL + `</a>`,
		// Opened on loopback: the steps name the address a phone can use.
		"server <code>192.0.2.7</code>, port <code>8080</code>", "<code>http://" + phoneAddr + "/proxy.pac</code>",
		`href="/ca.pem"`, `href="/ca.der"`, `href="/ca.mobileconfig"`,
		ca.Fingerprint(),
		"Encryption &amp; credentials → Install a certificate → CA certificate",
		`&lt;certificates src="user" /&gt;`, "&lt;debug-overrides&gt;",
		"Profile Downloaded → Install", "Certificate Trust Settings → enable full trust",
		"Router mode", "/proxy.pac",
	} {
		if !strings.Contains(body, s) {
			t.Errorf("page lacks %q", s)
		}
	}
	if strings.Contains(body, "unicorn ca init") {
		t.Error("page with a CA tells to run `unicorn ca init`")
	}
	if m := regexp.MustCompile(`(?i)<[a-z][^>]*\ssrc=|<link|<script|@import|url\(`).FindString(body); m != "" {
		t.Errorf("page loads an external resource: %s", m)
	}
	checkQR(t, body, pageURL)

	mc, err := ca.MobileConfig()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path, typ string
		want      []byte
	}{
		{"/ca.pem", "application/x-pem-file", ca.PEM()},
		{"/ca.der", "application/x-x509-ca-cert", ca.DER()},
		{"/ca.mobileconfig", "application/x-apple-aspen-config", mc},
	} {
		resp, got := getDirect(t, w, tc.path)
		if resp.StatusCode != 200 || !bytes.Equal(got, tc.want) {
			t.Errorf("%s: %d, %d bytes, want the CA's %d bytes", tc.path, resp.StatusCode, len(got), len(tc.want))
		}
		if ct := resp.Header.Get("Content-Type"); ct != tc.typ {
			t.Errorf("%s: Content-Type %q, want %q; phones act on the type", tc.path, ct, tc.typ)
		}
	}
	if len(w.Rules.Flows()) != 0 {
		t.Errorf("page asked the rules: %v", w.Rules.Flows())
	}
}

func TestPageWithoutCA(t *testing.T) {
	w := newWorld(t, worldConfig{Info: func(netip.Addr) proxy.PageInfo { return proxy.PageInfo{} }})
	_, b := getDirect(t, w, "/")
	body := string(b)
	if !strings.Contains(body, "No CA is configured") || !strings.Contains(body, "<code>unicorn ca init</code>") {
		t.Errorf("page without a CA does not say so: %s", body)
	}
	if strings.Contains(body, `href="/ca.`) {
		t.Error("page without a CA links to CA downloads")
	}
	// Only loopback is known: no QR code a phone could not follow.
	if strings.Contains(body, "<svg") || !strings.Contains(body, "opened on the unicorn machine itself") {
		t.Error("page on loopback with no other address: want no QR code and a hint")
	}
	for _, path := range []string{"/ca.pem", "/ca.der", "/ca.mobileconfig"} {
		resp, got := getDirect(t, w, path)
		if resp.StatusCode != 404 || !strings.Contains(string(got), "unicorn ca init") {
			t.Errorf("%s without a CA: %d %q, want 404 naming `unicorn ca init`", path, resp.StatusCode, got)
		}
	}
}

// checkQR fails t unless the page's QR code draws exactly the modules
// qr.Encode gives for text, offset by the 4-module quiet zone.
func checkQR(t *testing.T, page, text string) {
	t.Helper()
	m := regexp.MustCompile(`<svg class="qr"[^>]*viewBox="0 0 (\d+) \d+"[^>]*>.*?<path fill="#000" d="([^"]*)"`).FindStringSubmatch(page)
	if m == nil {
		t.Fatal("no QR code path in the page")
	}
	c, err := qr.Encode(text, qr.M)
	if err != nil {
		t.Fatal(err)
	}
	const quiet = 4
	if m[1] != fmt.Sprint(c.Size+2*quiet) {
		t.Errorf("QR viewBox %s, want %d", m[1], c.Size+2*quiet)
	}
	drawn := map[[2]int]bool{} // module (x, y) is black
	for _, r := range regexp.MustCompile(`M(\d+) (\d+)h(\d+)v1h-\d+z`).FindAllStringSubmatch(m[2], -1) {
		var x, y, n int
		fmt.Sscan(r[1]+" "+r[2]+" "+r[3], &x, &y, &n)
		for i := range n {
			drawn[[2]int{x + i - quiet, y - quiet}] = true
		}
	}
	for y := range c.Size {
		for x := range c.Size {
			if drawn[[2]int{x, y}] != c.Black(x, y) {
				t.Fatalf("QR module (%d,%d) differs from the code for %q", x, y, text)
			}
		}
	}
}
