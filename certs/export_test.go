package certs

import (
	"bytes"
	"encoding/base64"
	"encoding/pem"
	"encoding/xml"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestExports(t *testing.T) {
	ca := mustNewCA(t, Options{Host: "a&b<c>", Now: newClock().Now})
	block, rest := pem.Decode(ca.PEM())
	if block == nil || block.Type != "CERTIFICATE" || !bytes.Equal(block.Bytes, ca.Cert.Raw) || len(rest) != 0 {
		t.Error("PEM does not decode to the CA certificate")
	}
	if !bytes.Equal(ca.DER(), ca.Cert.Raw) {
		t.Error("DER differs from Cert.Raw")
	}
	mc, err := ca.MobileConfig()
	if err != nil {
		t.Fatal(err)
	}
	dec := xml.NewDecoder(bytes.NewReader(mc))
	for {
		_, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("mobileconfig is not well-formed XML: %v\n%s", err, mc)
		}
	}
	for _, want := range []string{
		"<data>" + base64.StdEncoding.EncodeToString(ca.Cert.Raw) + "</data>",
		"<string>com.apple.security.root</string>",
		"<string>unicorn test CA</string>",
		"a&amp;b&lt;c&gt;",
	} {
		if !strings.Contains(string(mc), want) {
			t.Errorf("mobileconfig lacks %q", want)
		}
	}
	again, _ := ca.MobileConfig()
	if !bytes.Equal(mc, again) {
		t.Error("mobileconfig is not stable across exports")
	}
	other, _ := mustNewCA(t, Options{Host: "a&b<c>", Now: newClock().Now}).MobileConfig()
	if bytes.Equal(mc[bytes.Index(mc, []byte("</data>")):], other[bytes.Index(other, []byte("</data>")):]) {
		t.Error("identifiers do not depend on the certificate")
	}
}

func TestFingerprint(t *testing.T) {
	fp := mustNewCA(t, Options{}).Fingerprint()
	if len(fp) != 32*3-1 || strings.Count(fp, ":") != 31 {
		t.Errorf("Fingerprint() = %q", fp)
	}
}
