package certs

import (
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"
)

// LeafValidity is the longest a leaf certificate is valid. Leaves are
// cheap to re-issue, and a short life limits the harm of a copied one; the
// CA's own expiry caps it further.
const LeafValidity = 7 * 24 * time.Hour

// leafRenewBefore is how close to expiry a cached leaf is replaced.
const leafRenewBefore = time.Hour

// flight is one leaf issuance that concurrent callers for a host share.
type flight struct {
	done chan struct{}
	cert *tls.Certificate
	err  error
}

// Leaf returns a certificate for host (a DNS name or an IP literal) signed
// by the CA, from the cache when a cached one is valid for at least another
// hour by the CA's clock. Concurrent calls for one host share a single
// issuance. The certificate has a fresh ECDSA P-256 key, the host as its
// only subject alternative name, server-auth usage, and validity from an
// hour ago to the earlier of LeafValidity from now and the CA's expiry.
func (ca *CA) Leaf(host string) (*tls.Certificate, error) {
	key, err := normalizeHost(host)
	if err != nil {
		return nil, err
	}
	now := ca.now()
	ca.mu.Lock()
	if c, ok := ca.cache.Get(key); ok && c.Leaf != nil && now.After(c.Leaf.NotBefore) && now.Add(leafRenewBefore).Before(c.Leaf.NotAfter) {
		ca.mu.Unlock()
		return c, nil
	}
	if f, ok := ca.inflight[key]; ok {
		ca.mu.Unlock()
		<-f.done
		return f.cert, f.err
	}
	f := &flight{done: make(chan struct{})}
	ca.inflight[key] = f
	ca.mu.Unlock()

	f.cert, f.err = ca.issue(key, now)

	ca.mu.Lock()
	delete(ca.inflight, key)
	if f.err == nil {
		ca.cache.Put(key, f.cert)
	}
	ca.mu.Unlock()
	close(f.done)
	return f.cert, f.err
}

// GetCertificate is a tls.Config.GetCertificate that issues by SNI, or by
// the connection's local IP address when the client sent no server name
// (clients never send SNI for IP literals).
func (ca *CA) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if hello.ServerName != "" {
		return ca.Leaf(hello.ServerName)
	}
	if hello.Conn != nil {
		if ap, err := netip.ParseAddrPort(hello.Conn.LocalAddr().String()); err == nil {
			return ca.Leaf(ap.Addr().Unmap().String())
		}
	}
	return nil, errors.New("certs: no SNI and no local IP address to issue a certificate for")
}

// Expired issues a leaf for host from the CA that expired a day ago (valid
// for the eight days before), for tests of how a device handles an
// expired certificate. It is never cached.
func (ca *CA) Expired(host string) (*tls.Certificate, error) {
	key, err := normalizeHost(host)
	if err != nil {
		return nil, err
	}
	now := ca.now()
	return ca.issueValid(key, now, now.Add(-8*24*time.Hour), now.Add(-24*time.Hour))
}

func (ca *CA) issue(host string, now time.Time) (*tls.Certificate, error) {
	notAfter := now.Add(LeafValidity)
	if notAfter.After(ca.Cert.NotAfter) {
		notAfter = ca.Cert.NotAfter
	}
	return ca.issueValid(host, now, now.Add(-time.Hour), notAfter)
}

// issueValid signs, at now, a leaf for host valid from notBefore to notAfter.
func (ca *CA) issueValid(host string, now, notBefore, notAfter time.Time) (*tls.Certificate, error) {
	if !now.Before(ca.Cert.NotAfter) {
		return nil, fmt.Errorf("the CA expired on %s: run `unicorn ca init --force`", ca.Cert.NotAfter.UTC().Format(time.DateOnly))
	}
	key, err := ca.genKey()
	if err != nil {
		return nil, fmt.Errorf("generate leaf key: %w", err)
	}
	serial, err := ca.serial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: host},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		tmpl.IPAddresses = []net.IP{ip.AsSlice()}
	} else {
		tmpl.DNSNames = []string{host}
	}
	der, err := x509.CreateCertificate(ca.rand, tmpl, ca.Cert, key.Public(), ca.key)
	if err != nil {
		return nil, fmt.Errorf("sign leaf for %s: %w", host, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

// normalizeHost lower-cases host, drops a trailing dot and IPv6 brackets,
// and rejects what cannot be a certificate name.
func normalizeHost(host string) (string, error) {
	h := strings.TrimSuffix(strings.ToLower(strings.TrimSpace(host)), ".")
	h = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
	if ip, err := netip.ParseAddr(h); err == nil {
		return ip.Unmap().WithZone("").String(), nil
	}
	if h == "" || len(h) > 253 || strings.ContainsAny(h, " /:\\@") {
		return "", fmt.Errorf("certs: %q is not a host name or IP address", host)
	}
	return h, nil
}
