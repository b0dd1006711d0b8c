package certs

import (
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// countKeys makes ca count leaf key generations.
func countKeys(ca *CA) *atomic.Int64 {
	var n atomic.Int64
	gen := ca.genKey
	ca.genKey = func() (*ecdsa.PrivateKey, error) {
		n.Add(1)
		return gen()
	}
	return &n
}

func TestLeafVerifies(t *testing.T) {
	clk := newClock()
	ca := mustNewCA(t, Options{Now: clk.Now})
	for _, host := range []string{"mainnet.infura.io", "47.91.156.93", "2001:db8::1"} {
		c, err := ca.Leaf(host)
		if err != nil {
			t.Fatal(err)
		}
		verifyLeaf(t, ca, c.Leaf, host, clk.Now())
		if got := c.Leaf.NotAfter.Sub(clk.Now()); got != LeafValidity {
			t.Errorf("%s: leaf valid for %v, want %v", host, got, LeafValidity)
		}
		if c.Leaf.SerialNumber.BitLen() < 64 {
			t.Errorf("%s: serial %v looks too short", host, c.Leaf.SerialNumber)
		}
	}
	if _, err := ca.Leaf("bad host/"); err == nil {
		t.Error("Leaf accepted an invalid host")
	}
}

func TestLeafCappedByCAExpiry(t *testing.T) {
	clk := newClock()
	ca := mustNewCA(t, Options{Now: clk.Now, Validity: 48 * time.Hour})
	c, err := ca.Leaf("example.org")
	if err != nil {
		t.Fatal(err)
	}
	if !c.Leaf.NotAfter.Equal(ca.Cert.NotAfter) {
		t.Errorf("leaf NotAfter %v, want the CA's %v", c.Leaf.NotAfter, ca.Cert.NotAfter)
	}
}

func TestLeafCache(t *testing.T) {
	clk := newClock()
	ca := mustNewCA(t, Options{Now: clk.Now, CacheSize: 2})
	gens := countKeys(ca)
	leaf := func(h string) *tls.Certificate {
		t.Helper()
		c, err := ca.Leaf(h)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	a := leaf("a.example")
	if leaf("A.Example.") != a || gens.Load() != 1 {
		t.Fatalf("second Leaf for the same host issued again (%d generations)", gens.Load())
	}
	leaf("b.example")
	leaf("a.example") // a is now the most recently used
	leaf("c.example") // evicts b
	if gens.Load() != 3 {
		t.Fatalf("generations = %d, want 3", gens.Load())
	}
	if leaf("a.example") != a || gens.Load() != 3 {
		t.Error("a was evicted, want b (least recently used)")
	}
	leaf("b.example")
	if gens.Load() != 4 {
		t.Errorf("b was not evicted (generations %d, want 4)", gens.Load())
	}

	clk.Advance(LeafValidity - 2*time.Hour) // still more than an hour left
	if leaf("a.example") != a {
		t.Error("leaf re-issued while still fresh")
	}
	clk.Advance(90 * time.Minute) // under an hour left
	if fresh := leaf("a.example"); fresh == a {
		t.Error("leaf expiring within the hour was not re-issued")
	} else {
		verifyLeaf(t, ca, fresh.Leaf, "a.example", clk.Now())
	}
}

func TestLeafConcurrentSingleIssue(t *testing.T) {
	ca := mustNewCA(t, Options{})
	gens := countKeys(ca)
	var wg sync.WaitGroup
	certs := make([]*tls.Certificate, 50)
	for i := range certs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := ca.Leaf("concurrent.example")
			if err != nil {
				t.Error(err)
			}
			certs[i] = c
		}()
	}
	wg.Wait()
	if gens.Load() != 1 {
		t.Errorf("50 concurrent Leaf calls made %d keys, want 1", gens.Load())
	}
	for _, c := range certs {
		if c != certs[0] {
			t.Fatal("concurrent callers got different certificates")
		}
	}
}

func TestGetCertificate(t *testing.T) {
	ca := mustNewCA(t, Options{})
	c, err := ca.GetCertificate(&tls.ClientHelloInfo{ServerName: "api.etherscan.io"})
	if err != nil || c.Leaf.DNSNames[0] != "api.etherscan.io" {
		t.Fatalf("by SNI: %v, %v", c, err)
	}
	server, client := net.Pipe()
	defer server.Close()
	defer client.Close()
	conn := addrConn{server, &net.TCPAddr{IP: net.ParseIP("192.0.2.7"), Port: 443}}
	c, err = ca.GetCertificate(&tls.ClientHelloInfo{Conn: conn})
	if err != nil || len(c.Leaf.IPAddresses) != 1 || c.Leaf.IPAddresses[0].String() != "192.0.2.7" {
		t.Fatalf("by local IP: %v, %v", c, err)
	}
	if _, err := ca.GetCertificate(&tls.ClientHelloInfo{}); err == nil {
		t.Error("no SNI and no conn: want an error")
	}
}

// addrConn overrides a net.Conn's local address.
type addrConn struct {
	net.Conn
	local net.Addr
}

func (c addrConn) LocalAddr() net.Addr { return c.local }

func TestHandshakeOverPipe(t *testing.T) {
	clk := newClock()
	ca := mustNewCA(t, Options{Now: clk.Now})
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	sc, cc := net.Pipe()
	defer sc.Close()
	defer cc.Close()
	srv := tls.Server(sc, &tls.Config{GetCertificate: ca.GetCertificate})
	cli := tls.Client(cc, &tls.Config{ServerName: "mainnet.infura.io", RootCAs: pool, Time: clk.Now})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- srv.HandshakeContext(ctx) }()
	if err := cli.HandshakeContext(ctx); err != nil {
		t.Fatalf("client handshake: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("server handshake: %v", err)
	}
	if got := cli.ConnectionState().PeerCertificates[0].DNSNames; len(got) != 1 || got[0] != "mainnet.infura.io" {
		t.Errorf("peer certificate names %v", got)
	}
}

func TestExpiredLeaf(t *testing.T) {
	ca, err := New(Options{Host: "lab"})
	if err != nil {
		t.Fatal(err)
	}
	c, err := ca.Expired("API.example.")
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	_, err = c.Leaf.Verify(x509.VerifyOptions{DNSName: "api.example", Roots: roots})
	var invalid x509.CertificateInvalidError
	if !errors.As(err, &invalid) || invalid.Reason != x509.Expired {
		t.Errorf("Verify = %v, want an expired certificate", err)
	}
	if err := c.Leaf.CheckSignatureFrom(ca.Cert); err != nil || c.Leaf.DNSNames[0] != "api.example" {
		t.Errorf("the expired leaf is not the CA's for api.example: %v %v", err, c.Leaf.DNSNames)
	}
}
