// Package certs owns unicorn's local certificate authority and the leaf
// certificates it issues for the hosts the proxy intercepts. The CA is
// created once per install (never shipped, never committed), kept in a
// directory with its key at mode 0600, and exported for test devices as PEM,
// DER or an Apple configuration profile.
package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"time"
)

// File names inside a CA directory.
const (
	CertFile = "ca.pem"     // the CA certificate, PEM, mode 0644
	KeyFile  = "ca-key.pem" // the CA private key, PKCS #8 PEM, mode 0600
)

// DefaultValidity is how long a new CA is valid when Options.Validity is zero.
const DefaultValidity = 2 * 365 * 24 * time.Hour

// DefaultCacheSize is the number of leaf certificates kept when
// Options.CacheSize is zero.
const DefaultCacheSize = 1024

// Options configure New and Load. The zero value is valid: every field is
// OPTIONAL.
type Options struct {
	// Host names the machine in the CA subject ("unicorn test CA — Host").
	// If empty, os.Hostname is used. Load ignores it.
	Host string
	// Validity is how long a new CA is valid. If zero, DefaultValidity.
	// Load ignores it.
	Validity time.Duration
	// Now is the clock for validity checks and issuance. If nil, time.Now.
	Now func() time.Time
	// Rand is the source for serial numbers. If nil, crypto/rand.Reader.
	// Key generation always uses crypto/rand (Go ignores custom readers there).
	Rand io.Reader
	// CacheSize bounds the built-in leaf cache. If zero, DefaultCacheSize.
	// Ignored when Cache is set.
	CacheSize int
	// Cache stores issued leaves. If nil, an LRU of CacheSize entries.
	Cache Cache
}

// CA is a certificate authority that can issue leaf certificates. It is
// safe for concurrent use.
type CA struct {
	// Cert is the CA certificate. Callers must not modify it.
	Cert *x509.Certificate

	key  *ecdsa.PrivateKey
	now  func() time.Time
	rand io.Reader

	mu       sync.Mutex // guards cache and inflight
	cache    Cache
	inflight map[string]*flight

	// genKey makes leaf keys; tests replace it to count generations.
	genKey func() (*ecdsa.PrivateKey, error)
}

// New creates a fresh CA in memory: an ECDSA P-256 key and a self-signed
// certificate valid from one hour before now for opts.Validity. Save
// writes it to disk.
func New(opts Options) (*CA, error) {
	ca := newCA(opts)
	host := opts.Host
	if host == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			h = "localhost"
		}
		host = h
	}
	validity := opts.Validity
	if validity <= 0 {
		validity = DefaultValidity
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate CA key: %w", err)
	}
	serial, err := ca.serial()
	if err != nil {
		return nil, err
	}
	now := ca.now()
	name := pkix.Name{CommonName: "unicorn test CA — " + host, Organization: []string{"unicorn (testing only)"}}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               name,
		Issuer:                name,
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(ca.rand, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("sign CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	ca.Cert, ca.key = cert, key
	return ca, nil
}

func newCA(opts Options) *CA {
	ca := &CA{now: opts.Now, rand: opts.Rand, cache: opts.Cache, inflight: map[string]*flight{}}
	if ca.now == nil {
		ca.now = time.Now
	}
	if ca.rand == nil {
		ca.rand = rand.Reader
	}
	if ca.cache == nil {
		size := opts.CacheSize
		if size <= 0 {
			size = DefaultCacheSize
		}
		ca.cache = NewLRU(size)
	}
	ca.genKey = func() (*ecdsa.PrivateKey, error) { return ecdsa.GenerateKey(elliptic.P256(), rand.Reader) }
	return ca
}

// serial returns a random positive 128-bit serial number.
func (ca *CA) serial() (*big.Int, error) {
	n, err := rand.Int(ca.rand, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("serial number: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}

// Load reads the CA in dir (CertFile and KeyFile). It refuses a key file
// that group or others can read, a key that does not match the
// certificate, and a CA that has expired by opts.Now. Each error names
// the fix. A missing CA wraps fs.ErrNotExist.
func Load(dir string, opts Options) (*CA, error) {
	certPath, keyPath := filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile)
	certPEM, err := os.ReadFile(certPath)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, notExistError("no CA in " + dir + ": run `unicorn ca init`")
	}
	if err != nil {
		return nil, err
	}
	fi, err := os.Stat(keyPath)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, notExistError(certPath + " exists but its key " + keyPath + " is missing: run `unicorn ca init --force` to make a new CA")
	}
	if err != nil {
		return nil, err
	}
	if runtime.GOOS != "windows" && fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("CA key %s has mode %04o and can be read by other users: run `chmod 600 %s`", keyPath, fi.Mode().Perm(), keyPath)
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, err
	}
	cert, err := parseCertPEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", certPath, err)
	}
	key, err := parseKeyPEM(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", keyPath, err)
	}
	pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
	if !ok || !pub.Equal(key.Public()) {
		return nil, fmt.Errorf("%s does not match the certificate %s: run `unicorn ca init --force` to make a new CA", keyPath, certPath)
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("%s is not a CA certificate: run `unicorn ca init --force`", certPath)
	}
	ca := newCA(opts)
	ca.Cert, ca.key = cert, key
	if now := ca.now(); now.After(cert.NotAfter) {
		return nil, fmt.Errorf("the CA in %s expired on %s: run `unicorn ca init --force` and trust the new CA on your devices", dir, cert.NotAfter.UTC().Format(time.DateOnly))
	}
	return ca, nil
}

// notExistError is a missing-CA error whose text names the fix and which
// matches fs.ErrNotExist under errors.Is.
type notExistError string

func (e notExistError) Error() string        { return string(e) }
func (e notExistError) Is(target error) bool { return target == fs.ErrNotExist }

func parseCertPEM(b []byte) (*x509.Certificate, error) {
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("no PEM CERTIFICATE block")
	}
	return x509.ParseCertificate(block.Bytes)
}

func parseKeyPEM(b []byte) (*ecdsa.PrivateKey, error) {
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, errors.New("no PEM block")
	}
	switch block.Type {
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, err
		}
		ek, ok := k.(*ecdsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("key is %T, want ECDSA", k)
		}
		return ek, nil
	case "EC PRIVATE KEY":
		return x509.ParseECPrivateKey(block.Bytes)
	}
	return nil, fmt.Errorf("PEM block %q is not a private key", block.Type)
}

// Save writes the CA to dir: CertFile at mode 0644 and KeyFile at 0600,
// each through a temporary file and a rename so a crash leaves no half
// written file. It creates dir with mode 0700 when missing.
func (ca *CA) Save(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	der, err := x509.MarshalPKCS8PrivateKey(ca.key)
	if err != nil {
		return err
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	// The key goes first: a crash between the renames leaves a mismatch
	// that Load reports, never a new certificate next to an old key.
	if err := writeAtomic(filepath.Join(dir, KeyFile), keyPEM, 0o600); err != nil {
		return err
	}
	return writeAtomic(filepath.Join(dir, CertFile), ca.PEM(), 0o644)
}

func writeAtomic(path string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after a successful rename
	// CreateTemp makes the file 0600; widen only after, never narrow late.
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// DefaultDir is where the CA lives unless told otherwise: $UNICORN_HOME
// if set, else the user's config directory joined with "unicorn".
func DefaultDir() (string, error) {
	if d := os.Getenv("UNICORN_HOME"); d != "" {
		return d, nil
	}
	d, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("no config directory (%v): set UNICORN_HOME or pass --dir", err)
	}
	return filepath.Join(d, "unicorn"), nil
}
