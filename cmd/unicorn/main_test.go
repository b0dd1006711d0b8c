package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/chaos-unicorn/unicorn/rules"
	"github.com/urfave/cli/v2"
)

func runCLI(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errb bytes.Buffer
	err := run(context.Background(), append([]string{"unicorn"}, args...), &out, &errb)
	if err != nil {
		code = 1
		if ec, ok := err.(cli.ExitCoder); ok {
			code = ec.ExitCode()
		}
		errb.WriteString(err.Error())
	}
	return out.String(), errb.String(), code
}

func TestParseTarget(t *testing.T) {
	tests := []struct {
		in    string
		host  string
		addr  string
		port  uint16
		proto rules.Proto
		err   string
	}{
		{in: "mainnet.infura.io", host: "mainnet.infura.io"},
		{in: "API.Etherscan.io:443", host: "api.etherscan.io", port: 443},
		{in: "47.91.156.93", addr: "47.91.156.93"},
		{in: "47.91.156.93:443", addr: "47.91.156.93", port: 443},
		{in: "206.189.243.57:30404/udp", addr: "206.189.243.57", port: 30404, proto: rules.ProtoUDP},
		{in: "2001:db8::1", addr: "2001:db8::1"},
		{in: "[2001:db8::1]:443/tcp", addr: "2001:db8::1", port: 443, proto: rules.ProtoTCP},
		{in: "host.example:99999", err: "is not a port"},
		{in: "host.example:443/sctp", err: "/tcp or /udp"},
		{in: ":443", err: "not a name or address"},
	}
	for _, tt := range tests {
		got, err := parseTarget(tt.in)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("parseTarget(%q) error %v, want %q", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("parseTarget(%q): %v", tt.in, err)
			continue
		}
		addr := ""
		if got.addr.IsValid() {
			addr = got.addr.String()
		}
		if got.host != tt.host || addr != tt.addr || got.port != tt.port || got.proto != tt.proto {
			t.Errorf("parseTarget(%q) = %+v", tt.in, got)
		}
	}
}

func TestExplainBuiltin(t *testing.T) {
	out, _, code := runCLI(t, "explain", "47.91.156.93:443")
	if code != 0 || !strings.Contains(out, "cud-2019 rules[4]") || !strings.Contains(out, "status-cluster-2019") || !strings.Contains(out, "TCP RST") {
		t.Errorf("explain cluster address (exit %d):\n%s", code, out)
	}
	out, _, _ = runCLI(t, "explain", "--client", "192.0.2.1", "example.org")
	if !strings.Contains(out, "DNS   allow (no rule matched)") {
		t.Errorf("explain allowed name:\n%s", out)
	}
}

func TestRulesCheck(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("scenario: x\nrules:\n  - {domains: [a.example], action: blakhole}\n  - {service: nosuch, action: reject}\n"), 0o644)
	_, stderr, code := runCLI(t, "rules", "check", bad)
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	for _, want := range []string{bad + `:3:36: rules[0].action: "blakhole" is not an action`, bad + `:4:15: rules[1].service: service "nosuch" is not defined`, "2 error(s)"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	good := filepath.Join(dir, "good.yaml")
	os.WriteFile(good, []byte("scenario: x\nrules:\n  - {domains: [a.example], action: blackhole}\n"), 0o644)
	out, stderr, code := runCLI(t, "rules", "check", good)
	if code != 0 || !strings.Contains(out, "ok: 1 scenario(s), 1 rule(s)") {
		t.Errorf("good file: exit %d, out %q, err %q", code, out, stderr)
	}
}

func TestServeRefusesBadFlags(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"serve", "--log-format", "xml"}, "want text or json"},
		{[]string{"serve", "--allow-clients", "everyone"}, "not an address or CIDR"},
		{[]string{"serve", "--scenario", "nosuch", "--dns", "127.0.0.1:0", "--proxy", ""}, "no scenario nosuch (loaded: "},
		{[]string{"serve", "--dns", "127.0.0.1:0", "--proxy", "", "--upstream", "bad:addr:x"}, "--upstream"},
		{[]string{"serve", "--dns", "", "--proxy", ""}, "nothing to serve"},
	} {
		_, stderr, code := runCLI(t, tt.args...)
		if code == 0 || !strings.Contains(stderr, tt.want) {
			t.Errorf("%v: exit %d, stderr %q, want it to contain %q", tt.args, code, stderr, tt.want)
		}
	}
}

func TestServeRefusesItsOwnAddressAsUpstream(t *testing.T) {
	got, err := upstreamList([]string{"127.0.0.1:5353"}, []string{"127.0.0.1:5353"})
	if err == nil || !strings.Contains(err.Error(), "loop") {
		t.Errorf("upstreamList = %v, %v; want a loop error", got, err)
	}
	for _, up := range []string{"127.0.0.1:53", "127.0.0.53:53", "[::1]:53"} {
		if _, err := upstreamList([]string{up}, []string{"0.0.0.0:53"}); err == nil || !strings.Contains(err.Error(), "loop") {
			t.Errorf("upstream %s with --dns 0.0.0.0:53: %v, want a loop error", up, err)
		}
	}
	if _, err := upstreamList([]string{"127.0.0.1:5353"}, []string{"0.0.0.0:53"}); err != nil {
		t.Errorf("another port on this machine is not a loop: %v", err)
	}
	got, err = upstreamList([]string{"192.0.2.53", "[2001:db8::53]"}, nil)
	if err != nil || strings.Join(got, " ") != "192.0.2.53:53 [2001:db8::53]:53" {
		t.Errorf("upstreamList = %v, %v", got, err)
	}
}

func TestListenErrorsSayHowToFix(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want []string
	}{
		{&net.OpError{Op: "listen", Err: os.NewSyscallError("bind", syscall.EACCES)}, []string{"permission denied", "setcap cap_net_bind_service=+ep", "--dns 0.0.0.0:5353"}},
		{&net.OpError{Op: "listen", Err: os.NewSyscallError("bind", syscall.EADDRINUSE)}, []string{"already in use", "--dns 0.0.0.0:5353"}},
		{&net.OpError{Op: "listen", Err: os.NewSyscallError("bind", syscall.EADDRNOTAVAIL)}, []string{"no such address", "0.0.0.0 for all"}},
	} {
		got := listenErr("--dns", "0.0.0.0:53", tt.err).Error()
		for _, w := range tt.want {
			if !strings.Contains(got, w) {
				t.Errorf("listenErr(%v) = %q, want it to contain %q", tt.err, got, w)
			}
		}
	}
}
