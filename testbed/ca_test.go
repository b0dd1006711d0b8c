package testbed

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestCAOnThePage: a CA made with `unicorn ca init` is what the device page
// offers for download, byte for byte; without one the page says how to
// make it.
func TestCAOnThePage(t *testing.T) {
	get := func(u *Unicorn, path string) (int, []byte) {
		t.Helper()
		resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + u.Proxy + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}

	none := Start(t)
	if code, body := get(none, "/ca.pem"); code != http.StatusNotFound || !strings.Contains(string(body), "unicorn ca init") {
		t.Errorf("/ca.pem without a CA: %d %q, want 404 naming `unicorn ca init`", code, body)
	}

	dir := filepath.Join(t.TempDir(), "ca")
	if out := Run(t, "ca", "init", "--dir", dir); out.Code != 0 {
		t.Fatalf("ca init: exit %d\n%s", out.Code, out.Stderr)
	}
	want, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	u := Start(t, "--ca-dir", dir)
	if code, body := get(u, "/ca.pem"); code != http.StatusOK || !bytes.Equal(body, want) {
		t.Errorf("/ca.pem: %d, %d bytes; want 200 with the %d bytes of %s", code, len(body), len(want), filepath.Join(dir, "ca.pem"))
	}
	show := Run(t, "ca", "show", "--dir", dir)
	_, page := get(u, "/")
	fingerprint := ""
	for _, l := range strings.Split(show.Stdout, "\n") {
		if f := strings.Fields(l); len(f) == 2 && f[0] == "SHA-256" {
			fingerprint = f[1]
		}
	}
	if fingerprint == "" || !strings.Contains(string(page), fingerprint) {
		t.Errorf("the page does not show the fingerprint %q that `ca show` prints:\n%s", fingerprint, show.Stdout)
	}
}

// TestInterceptedHTTPError: with a CA, an http_error rule for an HTTPS host
// answers inside the CONNECT tunnel with the rule's status and body, under
// a certificate from that CA; the upstream is never asked.
func TestInterceptedHTTPError(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	if out := Run(t, "ca", "init", "--dir", dir); out.Code != 0 {
		t.Fatalf("ca init: exit %d\n%s", out.Code, out.Stderr)
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	rulesFile := filepath.Join(t.TempDir(), "etherscan.yaml")
	os.WriteFile(rulesFile, []byte("scenario: etherscan-502\nrules:\n  - {hosts: [api.etherscan.io], action: http_error, status: 502, body: etherscan is down}\n"), 0o644)
	u := Start(t, "--rules", rulesFile, "--ca-dir", dir)

	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		Proxy:           http.ProxyURL(u.ProxyURL),
		TLSClientConfig: &tls.Config{RootCAs: roots},
	}}
	resp, err := c.Get("https://api.etherscan.io/api?module=account&action=txlist")
	if err != nil {
		t.Fatalf("GET through the intercepting proxy: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway || string(body) != "etherscan is down" {
		t.Errorf("got %d %q, want 502 %q", resp.StatusCode, body, "etherscan is down")
	}
	if resp.Header.Get("X-Unicorn-Scenario") != "etherscan-502" {
		t.Errorf("X-Unicorn-Scenario %q", resp.Header.Get("X-Unicorn-Scenario"))
	}
	if n := u.Upstream.Questions("api.etherscan.io"); n != 0 {
		t.Errorf("unicorn looked api.etherscan.io up %d times; an injected error needs no upstream", n)
	}
}
