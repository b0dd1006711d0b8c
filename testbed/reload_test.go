package testbed

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// TestReloadOnHangup: SIGHUP reloads the rules file. A file with errors is
// refused with each error logged at file:line:col, and the rules in force
// stay; a good file takes effect at once.
func TestReloadOnHangup(t *testing.T) {
	file := filepath.Join(t.TempDir(), "lab.yaml")
	write := func(text string) {
		t.Helper()
		if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("scenario: lab\nrules:\n  - {domains: [example.org], action: reject}\n")
	u := Start(t, "--rules", file, "--watch=false") // SIGHUP alone: a write must not reload by itself
	rcode := func(name string) int {
		t.Helper()
		m := new(dns.Msg)
		m.SetQuestion(dns.Fqdn(name), dns.TypeA)
		r, _, err := (&dns.Client{Timeout: 5 * time.Second}).Exchange(m, u.DNS)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return r.Rcode
	}
	hup := func() {
		t.Helper()
		if err := syscall.Kill(u.Pid(), syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
	}
	if got := rcode("example.org"); got != dns.RcodeNameError {
		t.Fatalf("example.org before reload: %s, want NXDOMAIN", dns.RcodeToString[got])
	}

	// Two errors: both logged, and the old rule still answers.
	write("scenario: lab\nrules:\n  - {domains: [example.org], action: blakhole}\n  - {service: nosuch, action: reject}\n")
	hup()
	failed := u.WaitLog(t, map[string]string{"msg": "reload failed; the rules in force are unchanged"})
	var errs []string
	for _, l := range u.Logs() {
		if l.Str("msg") == "rule error" {
			errs = append(errs, l.Str("error"))
		}
	}
	if len(errs) != 2 || !strings.Contains(errs[0], file+":3:") || !strings.Contains(errs[1], file+":4:") {
		t.Errorf("rule errors logged %q; want both, at %s:3 and :4", errs, file)
	}
	if !strings.Contains(failed.Str("scenarios"), "lab") {
		t.Errorf("failure line %v does not name the scenarios in force", failed)
	}
	if got := rcode("example.org"); got != dns.RcodeNameError {
		t.Errorf("example.org after a failed reload: %s, want NXDOMAIN from the rules in force", dns.RcodeToString[got])
	}

	// A good file: example.org is let through, example.com is refused.
	write("scenario: lab\nrules:\n  - {domains: [example.com], action: reject, rcode: refused}\n")
	hup()
	u.WaitLog(t, map[string]string{"msg": "rules reloaded"})
	if got := rcode("example.org"); got != dns.RcodeSuccess {
		t.Errorf("example.org after reload: %s, want the upstream's answer", dns.RcodeToString[got])
	}
	if got := rcode("example.com"); got != dns.RcodeRefused {
		t.Errorf("example.com after reload: %s, want REFUSED", dns.RcodeToString[got])
	}
}
