package main

import (
	"bytes"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCACommands(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")

	_, errOut, code := runCLI(t, "ca", "show", "--dir", dir)
	if code == 0 || !strings.Contains(errOut, "unicorn ca init") {
		t.Errorf("show before init (exit %d): want a hint to run init, got %q", code, errOut)
	}

	out, errOut, code := runCLI(t, "ca", "init", "--dir", dir)
	if code != 0 {
		t.Fatalf("init (exit %d): %s", code, errOut)
	}
	for _, want := range []string{"SHA-256", filepath.Join(dir, "ca-key.pem"), "unicorn ca export --dir " + dir + " --format mobileconfig"} {
		if !strings.Contains(out, want) {
			t.Errorf("init output lacks %q:\n%s", want, out)
		}
	}

	show, errOut, code := runCLI(t, "ca", "show", "--dir", dir)
	if code != 0 || !strings.Contains(show, "unicorn test CA") || !strings.Contains(show, "mode 0600") {
		t.Errorf("show (exit %d): %s%s", code, show, errOut)
	}

	pemFile := filepath.Join(t.TempDir(), "ca.pem")
	if _, errOut, code = runCLI(t, "ca", "export", "--dir", dir, "--format", "pem", "--out", pemFile); code != 0 {
		t.Fatalf("export pem (exit %d): %s", code, errOut)
	}
	got, err := os.ReadFile(pemFile)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if block, _ := pem.Decode(got); block == nil || !bytes.Equal(got, want) {
		t.Errorf("exported PEM differs from %s/ca.pem", dir)
	}

	out, _, code = runCLI(t, "ca", "export", "--dir", dir, "--format", "mobileconfig")
	if code != 0 || !strings.Contains(out, "com.apple.security.root") {
		t.Errorf("export mobileconfig to stdout (exit %d)", code)
	}
	if _, errOut, code = runCLI(t, "ca", "export", "--dir", dir, "--format", "p12"); code != 2 || !strings.Contains(errOut, "pem, der, mobileconfig") {
		t.Errorf("unknown format (exit %d): %q", code, errOut)
	}

	_, errOut, code = runCLI(t, "ca", "init", "--dir", dir)
	if code == 0 || !strings.Contains(errOut, "--force") {
		t.Errorf("second init without --force (exit %d): %q", code, errOut)
	}
	out, errOut, code = runCLI(t, "ca", "init", "--dir", dir, "--force")
	if code != 0 || !strings.Contains(out, "must now trust the new one") {
		t.Errorf("init --force (exit %d): %s%s", code, out, errOut)
	}
	if again, _ := os.ReadFile(filepath.Join(dir, "ca.pem")); bytes.Equal(again, want) {
		t.Error("init --force kept the old CA")
	}
}
