package testbed

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestPageShowsThisDevicesScenarios: the device page lists the active
// scenarios that apply to the device looking at it, not the others.
func TestPageShowsThisDevicesScenarios(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "lab.yaml"), []byte(`scenario: lab-phones-only
rules:
  - {domains: [lab.example], action: reject, clients: [192.0.2.0/24]}
`), 0o644)
	os.WriteFile(filepath.Join(dir, "everyone.yaml"), []byte(`scenario: everyone
rules:
  - {domains: [all.example], action: reject}
`), 0o644)
	u := Start(t, "--rules", dir)
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + u.Proxy + "/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	page := string(b)
	if !strings.Contains(page, "everyone") || strings.Contains(page, "lab-phones-only") {
		t.Errorf("page for 127.0.0.1 should list everyone and not lab-phones-only:\n%s", page)
	}
}
