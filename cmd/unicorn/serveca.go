package main

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"

	"github.com/chaos-unicorn/unicorn/certs"
	"github.com/urfave/cli/v2"
)

// serveCA loads the local CA for the onboarding page and TLS interception.
// unicorn serves without one: then the page offers no CA, and rules that
// need interception pass untouched. A CA that cannot be used is logged
// with the fix, not fatal, since most scenarios need none.
func serveCA(c *cli.Context, log *slog.Logger) *certs.CA {
	dir := c.String("ca-dir")
	if dir == "" {
		d, err := certs.DefaultDir()
		if err != nil {
			log.Warn("no CA directory; TLS interception is off", "err", err)
			return nil
		}
		dir = d
	}
	ca, err := certs.Load(dir, certs.Options{})
	switch {
	case errors.Is(err, fs.ErrNotExist):
		log.Info("no CA yet; TLS interception is off and the device page offers no CA (create one with `unicorn ca init`)", "dir", dir)
		return nil
	case err != nil:
		log.Warn("cannot use the CA; TLS interception is off", "dir", dir, "err", err)
		return nil
	}
	log.Info("CA loaded", "dir", dir, "sha256", ca.Fingerprint())
	return ca
}

// upstreamCAs returns the system roots plus the certificates in file, or
// nil (the system roots alone) when file is "".
func upstreamCAs(file string) (*x509.CertPool, error) {
	if file == "" {
		return nil, nil
	}
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, cli.Exit(fmt.Sprintf("--upstream-ca: %v", err), 2)
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, cli.Exit(fmt.Sprintf("--upstream-ca %s: no PEM certificate in it", file), 2)
	}
	return pool, nil
}
