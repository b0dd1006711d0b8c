package main

import (
	"bufio"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chaos-unicorn/unicorn/testbed"
)

// TestTestbedUpProbeDown runs testbed up as its own process, probes it
// directly, and stops it with testbed down.
func TestTestbedUpProbeDown(t *testing.T) {
	state := filepath.Join(t.TempDir(), "testbed.json")
	banner, exited := startTestbedUp(t, "--state", state, "--node-port", "0")
	for _, want := range []string{"infura", "status-cluster  tcp+udp  127.0.0.2:", "community", "unicorn serve --upstream 127.0.0.1:"} {
		if !strings.Contains(banner, want) {
			t.Errorf("banner lacks %q:\n%s", want, banner)
		}
	}
	if _, errs, code := runCLI(t, "testbed", "up", "--state", state); code != 1 || !strings.Contains(errs, "already runs") {
		t.Errorf("second testbed up: exit %d %q, want 1 and 'already runs'", code, errs)
	}

	probe, errs, code := runCLI(t, "testbed", "probe", "--state", state, "--timeout", "3s")
	if code != 0 {
		t.Fatalf("probe: exit %d %s", code, errs)
	}
	for _, s := range []string{"infura", "etherscan", "prices", "example", "status-cluster", "community"} {
		if !strings.Contains(probe, s+strings.Repeat(" ", 17-len(s))+"worked") {
			t.Errorf("probe: %s did not work:\n%s", s, probe)
		}
	}
	if !strings.Contains(probe, "udp PONG boot-1") {
		t.Errorf("probe did not ping the bootnode over UDP:\n%s", probe)
	}

	if out, errs, code := runCLI(t, "testbed", "down", "--state", state); code != 0 || !strings.Contains(out, "stopped") {
		t.Fatalf("down: exit %d %s%s", code, out, errs)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("testbed up exited with %v after down, want 0", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("testbed up still runs after down")
	}
	if _, err := os.Stat(state); !os.IsNotExist(err) {
		t.Errorf("state file left behind: %v", err)
	}
	if _, errs, code := runCLI(t, "testbed", "probe", "--state", state); code != 1 || !strings.Contains(errs, "no testbed runs") {
		t.Errorf("probe without a testbed: exit %d %q", code, errs)
	}
}

// startTestbedUp runs testbed up with args as its own process and waits
// for its banner; the process is killed by its pid when the test ends
// (a no-op once it exited). exited gets what Wait returned.
func startTestbedUp(t *testing.T, args ...string) (banner string, exited <-chan error) {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), mainArgsEnv+"="+strings.Join(append([]string{"testbed", "up"}, args...), "\n"))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var errb strings.Builder
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	lines := make(chan string, 64)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		done <- cmd.Wait()
	}()
	t.Cleanup(func() {
		cmd.Process.Kill() // by its own pid; a no-op once it exited
	})
	var b strings.Builder
	deadline := time.After(30 * time.Second)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				<-done
				t.Fatalf("testbed up ended early:\n%s%s", b.String(), errb.String())
			}
			b.WriteString(l + "\n")
			if strings.Contains(l, "testbed up: running") {
				return b.String(), done
			}
		case <-deadline:
			t.Fatalf("testbed up did not start within 30s:\n%s", b.String())
		}
	}
}

// hostLinks lists the interfaces of this process's namespace.
func hostLinks(t *testing.T) []string {
	t.Helper()
	ifs, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, i := range ifs {
		names = append(names, i.Name)
	}
	sort.Strings(names)
	return names
}

// TestTestbedUpNetns: as root, testbed up --netns builds the fake internet
// in namespaces, the probe (as the phone, over HTTPS with the CA file up
// wrote) finds every service working, and down leaves no namespace, veth,
// process or file behind; also when up was killed and could not clean up.
func TestTestbedUpNetns(t *testing.T) {
	if why := testbed.NetnsUnavailable(); why != "" {
		t.Skipf("skipping testbed up --netns: %s", why)
	}
	linksBefore := hostLinks(t)
	state := filepath.Join(t.TempDir(), "testbed.json")
	banner, exited := startTestbedUp(t, "--netns", "--state", state)
	st, err := readState(state)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Namespaces) != 4 {
		t.Fatalf("state records namespaces %v, want phone, phone2, router and inet", st.Namespaces)
	}
	for _, want := range []string{
		"infura          https       203.0.113.10:443", "status-cluster  tcp+udp     203.0.113.21:30303",
		"community       tcp+udp     203.0.113.50:30303", "test CA: " + caPath(state),
		"sudo ip netns exec " + st.Namespaces["router"] + " unicorn router up --lan lan0 --upstream 203.0.113.53:53",
	} {
		if !strings.Contains(banner, want) {
			t.Errorf("banner lacks %q:\n%s", want, banner)
		}
	}
	if pem, err := os.ReadFile(caPath(state)); err != nil || !strings.Contains(string(pem), "BEGIN CERTIFICATE") {
		t.Errorf("CA file %s: %v %q", caPath(state), err, pem)
	}
	probe, errs, code := runCLI(t, "testbed", "probe", "--state", state, "--timeout", "3s", "--format", "json")
	if code != 0 {
		t.Fatalf("probe: exit %d %s", code, errs)
	}
	var results []testbed.ProbeResult
	if err := json.Unmarshal([]byte(probe), &results); err != nil {
		t.Fatalf("probe --format json: %v\n%s", err, probe)
	}
	seen := map[string]bool{}
	for _, r := range results {
		seen[r.Service] = true
		if r.Outcome != testbed.Worked {
			t.Errorf("probe as the phone: %s %s (%s), want worked", r.Service, r.Outcome, r.Detail)
		}
	}
	for _, s := range []string{"infura", "etherscan", "prices", "example", "status-cluster", "community"} {
		if !seen[s] {
			t.Errorf("probe did not try %s:\n%s", s, probe)
		}
	}
	if out, errs, code := runCLI(t, "testbed", "down", "--state", state); code != 0 || !strings.Contains(out, "stopped") {
		t.Fatalf("down: exit %d %s%s", code, out, errs)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("testbed up exited with %v after down, want 0", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("testbed up still runs after down")
	}
	assertGone(t, st, state, linksBefore)

	// Killed, up cannot clean up: down removes its namespaces by name.
	banner, exited = startTestbedUp(t, "--netns", "--state", state)
	st, err = readState(state)
	if err != nil {
		t.Fatalf("%v\n%s", err, banner)
	}
	if err := syscall.Kill(st.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-exited
	out, errs, code := runCLI(t, "testbed", "down", "--state", state)
	if code != 1 || strings.Count(out, "removed namespace") != 4 {
		t.Errorf("down after a killed up: exit %d, want 1 (no such process), and the 4 namespaces removed:\n%s%s", code, out, errs)
	}
	assertGone(t, st, state, linksBefore)
}

// assertGone checks that nothing of the testbed in st is left.
func assertGone(t *testing.T, st *testbedState, state string, linksBefore []string) {
	t.Helper()
	list, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns list: %v: %s", err, list)
	}
	for role, name := range st.Namespaces {
		if strings.Contains(string(list), name) {
			t.Errorf("namespace %s (%s) left behind", name, role)
			exec.Command("ip", "netns", "del", name).Run() // by the recorded name
		}
	}
	if got := hostLinks(t); strings.Join(got, " ") != strings.Join(linksBefore, " ") {
		t.Errorf("interfaces here: %v, before up: %v", got, linksBefore)
	}
	if syscall.Kill(st.PID, 0) == nil {
		t.Errorf("testbed up (pid %d) still runs", st.PID)
	}
	for _, f := range []string{state, caPath(state)} {
		if _, err := os.Stat(f); !os.IsNotExist(err) {
			t.Errorf("%s left behind: %v", f, err)
		}
	}
}
