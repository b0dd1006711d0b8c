package testbed_test

import (
	"fmt"
	"net"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chaos-unicorn/unicorn/rules"
	"github.com/chaos-unicorn/unicorn/testbed"
)

func TestRulesCheck(t *testing.T) {
	t.Parallel()
	bad := writeFile(t, "bad.yaml", `scenario: broken
services:
  svc: {domains: [svc.test]}
rules:
  - {service: svc, action: blakhole}
  - {service: nosuch, action: reject}
  - {service: svc, action: reject, ttl: 15q}
`)
	r := testbed.Run(t, "rules", "check", bad)
	if r.Code != 1 {
		t.Errorf("exit code %d, want 1; stderr:\n%s", r.Code, r.Stderr)
	}
	// Every error, each as file:line:col: field: message.
	line := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(bad) + `:(\d+):(\d+): (\S+): \S`)
	found := map[string]string{} // field -> line
	for _, m := range line.FindAllStringSubmatch(r.Stderr, -1) {
		found[m[3]] = m[1]
	}
	want := map[string]string{"rules[0].action": "5", "rules[1].service": "6", "rules[2].ttl": "7"}
	for field, ln := range want {
		if found[field] != ln {
			t.Errorf("no error for %s at %s:%s:COL; stderr:\n%s", field, bad, ln, r.Stderr)
		}
	}
	if !strings.Contains(r.Stderr, `"blakhole" is not an action`) || !strings.Contains(r.Stderr, `service "nosuch" is not defined`) {
		t.Errorf("stderr does not say what is wrong:\n%s", r.Stderr)
	}

	good := writeFile(t, "good.yaml", "scenario: fine\nrules:\n  - {domains: [fine.test], action: reject}\n")
	if r := testbed.Run(t, "rules", "check", good); r.Code != 0 || !strings.HasPrefix(r.Stdout, "ok: 1 scenario(s), 1 rule(s)") {
		t.Errorf("good file: exit %d, stdout %q, stderr %q; want 0 and ok", r.Code, r.Stdout, r.Stderr)
	}
}

func TestExplain(t *testing.T) {
	t.Parallel()
	tests := []struct {
		target  string
		service string
		layers  []string
	}{
		// No traffic: explain only consults the rules.
		{"47.91.156.93:443", "status-cluster-2019", []string{"HTTP", "TCP"}},
		{"mainnet.infura.io", "infura", []string{"DNS", "HTTP", "TCP"}},
	}
	for _, tc := range tests {
		r := testbed.Run(t, "explain", tc.target)
		if r.Code != 0 {
			t.Errorf("explain %s: exit %d, stderr %s", tc.target, r.Code, r.Stderr)
			continue
		}
		ref := builtinRef(t, tc.service)
		if !strings.Contains(r.Stdout, rules.BuiltinDefault) || !strings.Contains(r.Stdout, "service "+tc.service) {
			t.Errorf("explain %s does not name %s and service %s:\n%s", tc.target, rules.BuiltinDefault, tc.service, r.Stdout)
		}
		for _, layer := range tc.layers {
			if !hasLine(r.Stdout, layer, "reject by "+ref) {
				t.Errorf("explain %s: no %s line with %q:\n%s", tc.target, layer, "reject by "+ref, r.Stdout)
			}
		}
	}
}

// hasLine reports whether out has a line whose first field is label and
// which contains want.
func hasLine(out, label, want string) bool {
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) > 0 && f[0] == label && strings.Contains(l, want) {
			return true
		}
	}
	return false
}

func TestServeAddressInUse(t *testing.T) {
	t.Parallel()
	up := testbed.NewDNS()
	upAddr, _ := up.Start(t)

	heldUDP, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer heldUDP.Close()
	heldTCP, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer heldTCP.Close()

	tests := []struct {
		flag, addr string
	}{
		{"--dns", heldUDP.LocalAddr().String()}, // the UDP side is taken
		{"--dns", heldTCP.Addr().String()},      // UDP is free, the TCP side is taken
		{"--proxy", heldTCP.Addr().String()},
	}
	for _, tc := range tests {
		// Only the listener under test: the other is off ("").
		dnsAddr, proxyAddr := tc.addr, ""
		if tc.flag == "--proxy" {
			dnsAddr, proxyAddr = "", tc.addr
		}
		r := testbed.Run(t, "serve", "--dns", dnsAddr, "--proxy", proxyAddr, "--upstream", upAddr)
		what := fmt.Sprintf("serve %s %s", tc.flag, tc.addr)
		if r.Code != 1 {
			t.Errorf("%s: exit %d, want 1; stderr:\n%s", what, r.Code, r.Stderr)
		}
		if r.Elapsed > 5*time.Second {
			t.Errorf("%s: took %v to fail, want fast", what, r.Elapsed)
		}
		advice := regexp.MustCompile(`e\.g\. ` + tc.flag + ` 127\.0\.0\.1:\d+`)
		if !strings.Contains(r.Stderr, tc.addr) || !strings.Contains(r.Stderr, "already in use") || !advice.MatchString(r.Stderr) {
			t.Errorf("%s: stderr does not say %s is in use and suggest another %s:\n%s", what, tc.addr, tc.flag, r.Stderr)
		}
		if strings.Contains(r.Stdout, "DNS ") {
			t.Errorf("%s: printed a banner before failing:\n%s", what, r.Stdout)
		}
	}
}

func TestScenarios(t *testing.T) {
	t.Parallel()
	r := testbed.Run(t, "scenarios")
	if r.Code != 0 {
		t.Fatalf("exit %d, stderr %s", r.Code, r.Stderr)
	}
	state := map[string]string{} // scenario -> ACTIVE, optional, off
	for _, l := range strings.Split(r.Stdout, "\n") {
		if f := strings.Fields(l); len(f) >= 2 && (f[0] == "ACTIVE" || f[0] == "optional" || f[0] == "off") {
			state[f[1]] = f[0]
		}
	}
	for name, want := range map[string]string{"cud-2019": "ACTIVE", "cud-2020": "optional", "cud-2019-third-parties": "optional"} {
		if state[name] != want {
			t.Errorf("scenario %s is %q, want %s; output:\n%s", name, state[name], want, r.Stdout)
		}
	}
}

// TestServeDNSPortZero starts serve with --dns 127.0.0.1:0 while many TCP
// ports of 127.0.0.1 are held: serve takes a free UDP port and needs the
// same TCP port, so it must pick again when that one is taken (it once
// failed saying "127.0.0.1:0 ... already in use"). With 3000 of the
// ~28000 ephemeral ports held, 30 starts without a retry all succeed with
// probability ~3%. Not parallel: the held ports and descriptors would
// starve the other tests.
func TestServeDNSPortZero(t *testing.T) {
	if testing.Short() {
		t.Skip("30 starts with 3000 ports held: not in -short")
	}
	const (
		hold   = 3000
		starts = 30
	)
	var held []net.Listener
	defer func() {
		for _, l := range held {
			l.Close()
		}
	}()
	for range hold {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			// Out of descriptors: give some back for unicorn's pipes.
			for _, l := range held[max(len(held)-100, 0):] {
				l.Close()
			}
			held = held[:max(len(held)-100, 0)]
			break
		}
		held = append(held, l)
	}
	t.Logf("holding %d TCP ports on 127.0.0.1", len(held))
	upAddr, _ := testbed.NewDNS().Start(t)
	for range starts {
		u := testbed.Start(t, "--dns", "127.0.0.1:0", "--upstream", upAddr)
		if err := u.Stop(); err != nil {
			t.Fatalf("stopping unicorn: %v", err)
		}
	}
}
