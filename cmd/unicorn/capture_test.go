package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/html"

	"github.com/chaos-unicorn/unicorn/capture"
	"github.com/chaos-unicorn/unicorn/testbed"
)

// mainArgsEnv makes the test binary run as unicorn with the arguments in
// it (one per line), so that tests can start the CLI in a namespace and
// stop it with a signal, like the real binary.
const mainArgsEnv = "UNICORN_TEST_MAIN_ARGS"

func TestMain(m *testing.M) {
	if args := os.Getenv(mainArgsEnv); args != "" {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		err := run(ctx, append([]string{"unicorn"}, strings.Split(args, "\n")...), os.Stdout, os.Stderr)
		stop()
		if err != nil {
			fmt.Fprintln(os.Stderr, "unicorn:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

const (
	rehearsal = "../../capture/testdata/rehearsal.pcap"
	scenario  = "../../capture/testdata/scenario.yaml"
)

func TestReportText(t *testing.T) {
	out, errs, code := runCLI(t, "report", "--rules", scenario, "--side", "device", rehearsal)
	if code != 3 || !strings.Contains(errs, "2 leak(s)") {
		t.Errorf("exit %d, stderr %q: want 3 and the leak count", code, errs)
	}
	for _, want := range []string{
		"40 packets", "LEAKS: 2", "handshake completed with a blocked name",
		"device 192.0.2.10", "infura", "1s 2s", "mainnet.infura.io NXDOMAIN",
		"198.51.100.53 (1 queries, HARD-CODED)", "DNS over TLS: 203.0.113.53:853/tcp", "QUIC: 203.0.113.30:443/udp",
		"fallbacks (status-cluster): 198.51.100.11:30303/tcp",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	// Without rules: attempts, no verdicts, exit 0.
	out, _, code = runCLI(t, "report", "--no-rules", rehearsal)
	if code != 0 || strings.Contains(out, "LEAKS:") || !strings.Contains(out, "mainnet.infura.io") {
		t.Errorf("--no-rules: exit %d\n%s", code, out)
	}
}

func TestReportJSONAndHTML(t *testing.T) {
	dir := t.TempDir()
	jsonPath, htmlPath := filepath.Join(dir, "r.json"), filepath.Join(dir, "r.html")
	if _, errs, code := runCLI(t, "report", "-r", scenario, "--side", "device", "--resolver", "192.0.2.1", "--format", "json", "--out", jsonPath, rehearsal); code != 3 {
		t.Fatalf("json: exit %d %s", code, errs)
	}
	var r capture.Report
	data, err := os.ReadFile(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &r); err != nil {
		t.Fatal(err)
	}
	if len(r.Leaks) != 2 || r.Leaks[0].Device != netip.MustParseAddr("192.0.2.10") || r.Stats.Packets != 40 {
		t.Errorf("json report: %d leaks, stats %+v", len(r.Leaks), r.Stats)
	}
	if _, errs, code := runCLI(t, "report", "-r", scenario, "--format", "html", "-o", htmlPath, rehearsal); code != 3 {
		t.Fatalf("html: exit %d %s", code, errs)
	}
	page, err := os.ReadFile(htmlPath)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(page), "http://") || strings.Contains(string(page), "https://") {
		t.Error("the page refers to the network")
	}
	if _, err := html.Parse(strings.NewReader(string(page))); err != nil || !strings.Contains(string(page), "<svg") {
		t.Errorf("page does not parse or has no timeline: %v", err)
	}
}

func TestReportErrors(t *testing.T) {
	dir := t.TempDir()
	notPcap := filepath.Join(dir, "notes.txt")
	if err := os.WriteFile(notPcap, []byte("not a capture at all\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	kept := filepath.Join(dir, "x.pcap")
	if err := os.WriteFile(kept, []byte("an earlier capture"), 0o644); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if data, _ := os.ReadFile(kept); string(data) != "an earlier capture" {
			t.Errorf("a failed capture overwrote %s", kept)
		}
	}()
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"report"}, 2, "give one capture FILE"},
		{[]string{"report", "--format", "pdf", rehearsal}, 2, `--format "pdf" is not a format (want text, json or html)`},
		{[]string{"report", "--side", "phone", rehearsal}, 2, `--side "phone"`},
		{[]string{"report", "--resolver", "dns.example", rehearsal}, 2, "not an IP address"},
		{[]string{"report", "--since", "yesterday", rehearsal}, 2, `--since "yesterday" is not a time`},
		{[]string{"report", filepath.Join(dir, "missing.pcap")}, 1, "no such file"},
		{[]string{"report", notPcap}, 1, "not a pcap or pcapng capture"},
		{[]string{"discover"}, 2, "give one capture FILE"},
		{[]string{"capture", "--iface", "lo"}, 1, "out"},
		{[]string{"capture", "--iface", "nosuch0", "--out", filepath.Join(dir, "x.pcap")}, 1, `no interface "nosuch0" (this machine has: lo`},
	} {
		_, errs, code := runCLI(t, tc.args...)
		if code != tc.code || !strings.Contains(errs, tc.want) {
			t.Errorf("%v: exit %d %q, want %d and %q", tc.args, code, errs, tc.code, tc.want)
		}
	}
}

func TestDiscoverProposesLoadableRules(t *testing.T) {
	out, errs, code := runCLI(t, "discover", rehearsal)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	want, err := os.ReadFile("../../capture/testdata/rehearsal.discover.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if out != string(want) {
		t.Errorf("discover differs from the golden file:\n%s", out)
	}
	path := filepath.Join(t.TempDir(), "discovered.yaml")
	if _, errs, code := runCLI(t, "discover", "-o", path, "--scenario", "my-app", rehearsal); code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	out, errs, code = runCLI(t, "rules", "check", path)
	if code != 0 || !strings.Contains(out, "5 service(s)") {
		t.Errorf("rules check of the proposal: exit %d\n%s%s", code, out, errs)
	}
	out, _, _ = runCLI(t, "scenarios", "--rules", path)
	if !strings.Contains(out, "my-app") {
		t.Errorf("scenario my-app not listed:\n%s", out)
	}
}

// TestCaptureLive captures on a veth in a namespace while a peer sends UDP
// across it, stops the capture with SIGINT as Ctrl-C would, and reports
// the file.
func TestCaptureLive(t *testing.T) {
	if why := testbed.NetnsUnavailable(); why != "" {
		t.Skip("live capture needs a network namespace:", why)
	}
	a := testbed.NewNetns(t, "cap")
	b := testbed.NewNetns(t, "peer")
	testbed.Veth(t, a, "192.0.2.1/24", b, "192.0.2.2/24")
	out := filepath.Join(t.TempDir(), "live.pcap")

	argv := a.Exec(os.Args[0])
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), mainArgsEnv+"="+strings.Join([]string{"capture", "--iface", "veth0", "--out", out, "--duration", "60s"}, "\n"))
	stderr, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	t.Cleanup(func() {
		cmd.Process.Kill() // by its own pid; a no-op once it exited
		<-done
	})
	lines := make(chan string, 64)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Split(scanCRLF)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		done <- cmd.Wait()
	}()
	var log strings.Builder
	waitFor := func(want string) {
		t.Helper()
		deadline := time.After(20 * time.Second)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("capture ended before %q:\n%s", want, log.String())
				}
				log.WriteString(l + "\n")
				if strings.Contains(l, want) {
					return
				}
			case <-deadline:
				t.Fatalf("no %q within 20s:\n%s", want, log.String())
			}
		}
	}
	waitFor("capturing on veth0")

	// Five datagrams, each from a new socket (a new source port), 200 ms apart.
	send := b.Exec("bash", "-c", "for i in 1 2 3 4 5; do echo ping >/dev/udp/192.0.2.1/30303; sleep 0.2; done")
	if o, err := exec.Command(send[0], send[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("sending: %v: %s", err, o)
	}
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	waitFor("wrote ")
	for range lines {
	}
	if err := <-done; err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 0 {
			t.Fatalf("capture did not stop cleanly on SIGINT: %v\n%s", err, log.String())
		}
	}
	done <- nil // for the cleanup

	f, err := capture.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	an, _ := capture.NewAnalyzer(capture.Options{})
	if err := an.ReadFrom(f); err != nil {
		t.Fatal(err)
	}
	r := an.Report()
	if r.Stats.FileError != "" || r.Stats.Malformed != 0 {
		t.Errorf("capture file: %+v", r.Stats)
	}
	var got *capture.ServiceReport
	for _, d := range r.Devices {
		if d.Addr == netip.MustParseAddr("192.0.2.2") {
			for _, g := range d.Services {
				if g.Target == "192.0.2.1" {
					got = g
				}
			}
		}
	}
	if got == nil {
		t.Fatalf("no attempts from 192.0.2.2 to 192.0.2.1 in the capture: %+v", r.Devices)
	}
	if got.UDP != 5 || got.Retries != 4 || len(got.Destinations) != 1 || got.Destinations[0].Dest != "192.0.2.1:30303/udp" {
		t.Errorf("UDP attempts %d, retries %d, destinations %+v; want 5 flows to 192.0.2.1:30303/udp, 4 of them retries", got.UDP, got.Retries, got.Destinations)
	}
	if len(got.Timeline) == 5 {
		gap := got.Timeline[4].T - got.Timeline[0].T
		if gap < 0.6 || gap > 5 {
			t.Errorf("the 5 datagrams span %.3fs, want about 0.8s", gap)
		}
	}
}

// scanCRLF splits on \n and on the \r of the progress line.
func scanCRLF(data []byte, atEOF bool) (int, []byte, error) {
	for i, c := range data {
		if c == '\n' || c == '\r' {
			return i + 1, data[:i], nil
		}
	}
	if atEOF && len(data) > 0 {
		return len(data), data, nil
	}
	return 0, nil, nil
}

// TestCaptureStopsByItself: --duration ends the capture on time and
// --count after that many packets, each with a clean exit and the file
// written, without a Ctrl-C.
func TestCaptureStopsByItself(t *testing.T) {
	if why := testbed.NetnsUnavailable(); why != "" {
		t.Skip("live capture needs a network namespace:", why)
	}
	a := testbed.NewNetns(t, "cap")
	b := testbed.NewNetns(t, "peer")
	testbed.Veth(t, a, "192.0.2.1/24", b, "192.0.2.2/24")
	// capture runs unicorn capture in a, while b sends a datagram every
	// 100 ms (at most 100), and returns the file's packets and how long
	// the capture ran.
	capture1 := func(args ...string) (int64, time.Duration) {
		t.Helper()
		out := filepath.Join(t.TempDir(), "stop.pcap")
		argv := a.Exec(os.Args[0])
		cmd := exec.Command(argv[0], argv[1:]...)
		cmd.Env = append(os.Environ(), mainArgsEnv+"="+strings.Join(append([]string{"capture", "--iface", "veth0", "--out", out}, args...), "\n"))
		var log strings.Builder
		cmd.Stdout, cmd.Stderr = &log, &log
		start := time.Now()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		send := b.Exec("bash", "-c", "echo ping >/dev/udp/192.0.2.1/30303")
		var err error
	wait:
		for i := 0; ; i++ {
			select {
			case err = <-done:
				break wait
			case <-time.After(100 * time.Millisecond):
			}
			if i == 100 {
				cmd.Process.Kill() // by its own pid
				t.Fatalf("unicorn capture %s still running after 10 s:\n%s", strings.Join(args, " "), log.String())
			}
			exec.Command(send[0], send[1:]...).Run()
		}
		elapsed := time.Since(start)
		if err != nil || !strings.Contains(log.String(), "wrote ") {
			t.Fatalf("unicorn capture %s: %v\n%s", strings.Join(args, " "), err, log.String())
		}
		f, err := capture.Open(out)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		an, _ := capture.NewAnalyzer(capture.Options{})
		if err := an.ReadFrom(f); err != nil {
			t.Fatal(err)
		}
		return an.Report().Stats.Packets, elapsed
	}
	if n, el := capture1("--duration", "1500ms"); el < 1400*time.Millisecond || el > 8*time.Second || n == 0 {
		t.Errorf("--duration 1500ms: ran %v with %d packets, want about 1.5 s and some packets", el, n)
	}
	if n, _ := capture1("--count", "3"); n != 3 {
		t.Errorf("--count 3: %d packets in the file, want 3", n)
	}
}
