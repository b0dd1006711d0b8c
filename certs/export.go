package certs

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"encoding/xml"
	"fmt"
	"strings"
)

// PEM returns the CA certificate PEM-encoded (for Android, browsers, curl).
func (ca *CA) PEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw})
}

// DER returns the CA certificate in DER form (a copy of Cert.Raw).
func (ca *CA) DER() []byte {
	return bytes.Clone(ca.Cert.Raw)
}

// Fingerprint returns the SHA-256 of the CA certificate as colon-separated
// upper-case hex, the form iOS and Android settings show.
func (ca *CA) Fingerprint() string {
	sum := sha256.Sum256(ca.Cert.Raw)
	h := strings.ToUpper(hex.EncodeToString(sum[:]))
	parts := make([]string, 0, len(sum))
	for i := 0; i < len(h); i += 2 {
		parts = append(parts, h[i:i+2])
	}
	return strings.Join(parts, ":")
}

// MobileConfig returns an Apple configuration profile (plist XML) holding
// the CA as one com.apple.security.root payload. Identifiers and UUIDs are
// derived from the certificate's SHA-256, so exporting the same CA twice
// gives the same bytes and a rotated CA gives a different profile.
func (ca *CA) MobileConfig() ([]byte, error) {
	sum := sha256.Sum256(ca.Cert.Raw)
	short := hex.EncodeToString(sum[:8])
	var b bytes.Buffer
	b.WriteString(`<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
	<key>PayloadContent</key>
	<array>
		<dict>
`)
	kv := func(indent, k, v string) {
		fmt.Fprintf(&b, "%s<key>%s</key>\n%s<string>%s</string>\n", indent, k, indent, esc(v))
	}
	in := "\t\t\t"
	kv(in, "PayloadCertificateFileName", "unicorn-ca.cer")
	fmt.Fprintf(&b, "%s<key>PayloadContent</key>\n%s<data>%s</data>\n", in, in, base64.StdEncoding.EncodeToString(ca.Cert.Raw))
	kv(in, "PayloadDescription", "Root certificate of the unicorn test CA")
	kv(in, "PayloadDisplayName", ca.Cert.Subject.CommonName)
	kv(in, "PayloadIdentifier", "io.github.chaos-unicorn.ca."+short)
	kv(in, "PayloadType", "com.apple.security.root")
	kv(in, "PayloadUUID", uuidFrom(sum[:], "payload"))
	fmt.Fprintf(&b, "%s<key>PayloadVersion</key>\n%s<integer>1</integer>\n", in, in)
	b.WriteString("\t\t</dict>\n\t</array>\n")
	in = "\t"
	kv(in, "PayloadDescription", "Lets this device trust the unicorn test CA for fault-injection testing. Remove it when testing is done.")
	kv(in, "PayloadDisplayName", "unicorn test CA")
	kv(in, "PayloadIdentifier", "io.github.chaos-unicorn.profile."+short)
	fmt.Fprintf(&b, "%s<key>PayloadRemovalDisallowed</key>\n%s<false/>\n", in, in)
	kv(in, "PayloadType", "Configuration")
	kv(in, "PayloadUUID", uuidFrom(sum[:], "profile"))
	fmt.Fprintf(&b, "%s<key>PayloadVersion</key>\n%s<integer>1</integer>\n", in, in)
	b.WriteString("</dict>\n</plist>\n")
	return b.Bytes(), nil
}

func esc(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s)) // a strings.Builder never fails
	return b.String()
}

// uuidFrom derives a name-based UUID (version 5 layout, SHA-256 instead of
// SHA-1) from seed and label.
func uuidFrom(seed []byte, label string) string {
	h := sha256.Sum256(append([]byte(label+":"), seed...))
	u := h[:16]
	u[6] = u[6]&0x0f | 0x50
	u[8] = u[8]&0x3f | 0x80
	x := strings.ToUpper(hex.EncodeToString(u))
	return x[0:8] + "-" + x[8:12] + "-" + x[12:16] + "-" + x[16:20] + "-" + x[20:32]
}
