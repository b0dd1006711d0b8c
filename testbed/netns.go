package testbed

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// ipTimeout bounds each `ip` command.
const ipTimeout = 10 * time.Second

// Netns is a network namespace created by NewNetns; it is removed, by its
// name, when the test that created it ends.
type Netns struct {
	Name string
}

// NetnsUnavailable returns why the tests cannot create network namespaces
// (not root, no `ip`, no `ip netns`), or "" when they can.
func NetnsUnavailable() string {
	if os.Geteuid() != 0 {
		return "not root: network namespaces need root"
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return "ip (iproute2) is not on PATH"
	}
	if out, err := ipCmd("netns", "list"); err != nil {
		return fmt.Sprintf("ip netns list: %v: %s", err, out)
	}
	return ""
}

// NewNetns creates a network namespace named "unicorn-<role>-<pid>-<random>"
// with its loopback up, and removes it (`ip netns del`) when tb ends.
// Processes started in it must be stopped before that: register their
// cleanup after NewNetns, so that it runs first.
func NewNetns(tb testing.TB, role string) *Netns {
	tb.Helper()
	var r [4]byte
	rand.Read(r[:])
	n := &Netns{Name: fmt.Sprintf("unicorn-%s-%d-%s", role, os.Getpid(), hex.EncodeToString(r[:]))}
	if out, err := ipCmd("netns", "add", n.Name); err != nil {
		tb.Fatalf("testbed: ip netns add %s: %v: %s", n.Name, err, out)
	}
	tb.Cleanup(func() {
		if out, err := ipCmd("netns", "del", n.Name); err != nil {
			tb.Errorf("testbed: ip netns del %s: %v: %s", n.Name, err, out)
		}
	})
	n.IP(tb, "link", "set", "lo", "up")
	return n
}

// IP runs `ip -n NAME args` and fails tb if it fails.
func (n *Netns) IP(tb testing.TB, args ...string) {
	tb.Helper()
	if out, err := ipCmd(append([]string{"-n", n.Name}, args...)...); err != nil {
		tb.Fatalf("testbed: ip -n %s %s: %v: %s", n.Name, strings.Join(args, " "), err, out)
	}
}

// Exec returns the argv that runs argv in n: `ip netns exec NAME argv...`.
// ip execs argv in place, so the process id is that of argv itself.
func (n *Netns) Exec(argv ...string) []string {
	return append([]string{"ip", "netns", "exec", n.Name}, argv...)
}

// Veth links a and b with a veth pair, "veth0" in a with addrA and "veth0"
// in b with addrB (CIDR, e.g. "192.0.2.10/24"), both up. The pair goes
// when either namespace is removed.
func Veth(tb testing.TB, a *Netns, addrA string, b *Netns, addrB string) {
	tb.Helper()
	a.IP(tb, "link", "add", "veth0", "type", "veth", "peer", "name", "veth0", "netns", b.Name)
	a.IP(tb, "addr", "add", addrA, "dev", "veth0")
	b.IP(tb, "addr", "add", addrB, "dev", "veth0")
	a.IP(tb, "link", "set", "veth0", "up")
	b.IP(tb, "link", "set", "veth0", "up")
}

// StartIn runs `unicorn serve args` inside n, like Start but with no
// defaults added: args must give the addresses (in n) to listen on and an
// --upstream. It waits at most StartTimeout for the banner; the process
// is stopped by its process id when tb ends, as with Start.
func StartIn(tb testing.TB, n *Netns, args ...string) *Unicorn {
	tb.Helper()
	u, err := launch(tb, n.Exec(append([]string{Binary(tb), "serve"}, args...)...), n.Name)
	if err != nil {
		tb.Fatal(err)
	}
	return u
}

// ipCmd runs ip with args, bounded by ipTimeout, and returns its output.
func ipCmd(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), ipTimeout)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, "ip", args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return strings.TrimSpace(out.String()), err
}
