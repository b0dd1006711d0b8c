package certs

import (
	"crypto/x509"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeClock is a settable clock for Options.Now.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock { return &fakeClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func mustNewCA(t *testing.T, opts Options) *CA {
	t.Helper()
	if opts.Host == "" {
		opts.Host = "testhost"
	}
	ca, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func TestNewAndSave(t *testing.T) {
	clk := newClock()
	ca := mustNewCA(t, Options{Host: "lab-mac", Now: clk.Now})
	if !ca.Cert.IsCA || !ca.Cert.BasicConstraintsValid {
		t.Error("certificate is not a CA")
	}
	if cn := ca.Cert.Subject.CommonName; cn != "unicorn test CA — lab-mac" {
		t.Errorf("subject CN = %q", cn)
	}
	if got := ca.Cert.NotAfter.Sub(clk.Now()); got != DefaultValidity {
		t.Errorf("validity = %v, want %v", got, DefaultValidity)
	}
	dir := filepath.Join(t.TempDir(), "ca")
	if err := ca.Save(dir); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		path string
		mode os.FileMode
	}{{dir, 0o700}, {filepath.Join(dir, KeyFile), 0o600}, {filepath.Join(dir, CertFile), 0o644}} {
		fi, err := os.Stat(c.path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != c.mode {
			t.Errorf("%s mode %04o, want %04o", c.path, fi.Mode().Perm(), c.mode)
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Errorf("dir holds %d entries, want 2 (no temp files left)", len(entries))
	}
}

func TestLoadRoundTrip(t *testing.T) {
	clk := newClock()
	ca := mustNewCA(t, Options{Now: clk.Now})
	dir := t.TempDir()
	if err := ca.Save(dir); err != nil {
		t.Fatal(err)
	}
	got, err := Load(dir, Options{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	if !got.Cert.Equal(ca.Cert) || !got.key.Equal(ca.key) {
		t.Error("loaded CA differs from the saved one")
	}
}

func TestLoadErrors(t *testing.T) {
	clk := newClock()
	save := func(t *testing.T) string {
		dir := t.TempDir()
		if err := mustNewCA(t, Options{Now: clk.Now}).Save(dir); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	tests := []struct {
		name  string
		setup func(t *testing.T) string
		now   time.Time
		want  string
	}{
		{"missing", func(t *testing.T) string { return t.TempDir() }, clk.Now(), "run `unicorn ca init`"},
		{"key readable by others", func(t *testing.T) string {
			dir := save(t)
			if err := os.Chmod(filepath.Join(dir, KeyFile), 0o644); err != nil {
				t.Fatal(err)
			}
			return dir
		}, clk.Now(), "chmod 600"},
		{"mismatched pair", func(t *testing.T) string {
			dir, other := save(t), save(t)
			b, err := os.ReadFile(filepath.Join(other, KeyFile))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, KeyFile), b, 0o600); err != nil {
				t.Fatal(err)
			}
			return dir
		}, clk.Now(), "does not match"},
		{"expired", save, clk.Now().Add(DefaultValidity + time.Hour), "unicorn ca init --force"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := tt.setup(t)
			_, err := Load(dir, Options{Now: func() time.Time { return tt.now }})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Load error %v, want it to mention %q", err, tt.want)
			}
		})
	}
	if _, err := Load(t.TempDir(), Options{}); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing CA error %v does not match fs.ErrNotExist", err)
	}
}

func TestDefaultDir(t *testing.T) {
	t.Setenv("UNICORN_HOME", "/some/where")
	if d, err := DefaultDir(); err != nil || d != "/some/where" {
		t.Errorf("DefaultDir() = %q, %v", d, err)
	}
}

func verifyLeaf(t *testing.T, ca *CA, leaf *x509.Certificate, name string, at time.Time) {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	_, err := leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: pool, CurrentTime: at, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	if err != nil {
		t.Errorf("leaf for %s does not verify: %v", name, err)
	}
}
