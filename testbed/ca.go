package testbed

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"sync"
	"time"
)

// CA is a certificate authority made in memory for one test process. The
// fake services' TLS listeners get from it a certificate for whatever name
// a client asks for (SNI), or for the listening address when the client
// sends none, so a client that trusts Pool can reach a fake by any name.
// Its key never leaves the process.
type CA struct {
	cert *x509.Certificate
	key  crypto.Signer
	pool *x509.CertPool

	mu     sync.Mutex
	leaves map[string]*tls.Certificate // SNI name or address -> leaf
}

// TestCA returns the process's CA, creating it on first use.
var TestCA = sync.OnceValue(func() *CA {
	ca, err := newCA(time.Now())
	if err != nil {
		panic("testbed: test CA: " + err.Error()) // only if the system's randomness fails
	}
	return ca
})

func newCA(now time.Time) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "unicorn testbed CA", Organization: []string{"unicorn testbed"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &CA{cert: cert, key: key, pool: pool, leaves: make(map[string]*tls.Certificate)}, nil
}

// PEM returns the CA certificate in PEM, e.g. for unicorn's --upstream-ca.
func (ca *CA) PEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw})
}

// Pool returns a pool holding only the CA: set it as a client's RootCAs.
func (ca *CA) Pool() *x509.CertPool { return ca.pool }

// ClientConfig returns a TLS client configuration that trusts the CA only.
func (ca *CA) ClientConfig() *tls.Config { return &tls.Config{RootCAs: ca.pool} }

// ServerConfig returns a TLS server configuration that presents a leaf
// certificate for the name the client asks for.
func (ca *CA) ServerConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"http/1.1"},
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			name := hello.ServerName
			if name == "" && hello.Conn != nil {
				if a, ok := hello.Conn.LocalAddr().(*net.TCPAddr); ok {
					name = a.IP.String()
				}
			}
			return ca.leaf(name)
		},
	}
}

// leaf returns a certificate for name (a DNS name or an address), issuing
// it on first use.
func (ca *CA) leaf(name string) (*tls.Certificate, error) {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	if c := ca.leaves[name]; c != nil {
		return c, nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(int64(len(ca.leaves)) + 2),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if a, err := netip.ParseAddr(name); err == nil {
		tmpl.IPAddresses = []net.IP{a.AsSlice()}
	} else {
		tmpl.DNSNames = []string{name}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		return nil, fmt.Errorf("testbed: leaf for %q: %w", name, err)
	}
	c := &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	ca.leaves[name] = c
	return c, nil
}
