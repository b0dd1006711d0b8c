package main

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestTestbedUpProbeDown runs testbed up as its own process, probes it
// directly, and stops it with testbed down.
func TestTestbedUpProbeDown(t *testing.T) {
	state := filepath.Join(t.TempDir(), "testbed.json")
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), mainArgsEnv+"="+strings.Join([]string{"testbed", "up", "--state", state, "--node-port", "0"}, "\n"))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	lines := make(chan string, 64)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		exited <- cmd.Wait()
	}()
	t.Cleanup(func() {
		cmd.Process.Kill() // by its own pid; a no-op once it exited
	})
	var banner strings.Builder
	deadline := time.After(20 * time.Second)
wait:
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("testbed up ended early:\n%s", banner.String())
			}
			banner.WriteString(l + "\n")
			if strings.Contains(l, "testbed up: running") {
				break wait
			}
		case <-deadline:
			t.Fatalf("testbed up did not start within 20s:\n%s", banner.String())
		}
	}
	for _, want := range []string{"infura", "status-cluster  tcp+udp  127.0.0.2:", "community", "unicorn serve --upstream 127.0.0.1:"} {
		if !strings.Contains(banner.String(), want) {
			t.Errorf("banner lacks %q:\n%s", want, banner.String())
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
