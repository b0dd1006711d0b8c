package testbed

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Bounds on every wait for the process.
const (
	// StartTimeout bounds the wait for the banner.
	StartTimeout = 10 * time.Second
	// stopTimeout bounds the wait for the process to exit after SIGTERM,
	// and again after SIGKILL.
	stopTimeout = 5 * time.Second
	// pipeDelay bounds the copying of output after the process exits.
	pipeDelay = 2 * time.Second
	// LogTimeout bounds WaitLog.
	LogTimeout = 5 * time.Second
	// RunTimeout bounds a command run with Run.
	RunTimeout = 30 * time.Second
)

// Unicorn is one `unicorn serve` process started by Start. Its fields are
// set before Start returns and never change.
type Unicorn struct {
	// DNS is the "127.0.0.1:port" of the DNS front end (UDP and TCP), as
	// the banner printed it.
	DNS string
	// Proxy is the "127.0.0.1:port" of the HTTP proxy, from the banner.
	Proxy string
	// ProxyURL is http://Proxy, for http.Transport.Proxy.
	ProxyURL *url.URL
	// Control is the "127.0.0.1:port" of the control API and dashboard,
	// from the banner; "" when started with --control "".
	Control string
	// ControlToken is the token the banner printed when unicorn made one
	// up (a non-loopback --control without --control-token); else "".
	ControlToken string
	// Upstream is the fake resolver unicorn forwards to and resolves
	// proxied names with; nil when the caller passed its own --upstream.
	Upstream *DNS
	// Banner is what unicorn printed on stdout up to the proxy line.
	Banner []string

	tb             testing.TB
	cmd            *exec.Cmd
	stdout, stderr *lines
	exited         chan struct{} // closed when the process has been waited for
	waitErr        error         // valid once exited is closed
	stopped        bool          // Stop sent SIGTERM
	reported       bool          // the test already failed with the exit
}

// Start runs `unicorn serve` with args after these defaults, each added
// unless args sets it: --dns 127.0.0.1:0 --proxy 127.0.0.1:0 --control 127.0.0.1:0 --log-format
// json --ca-dir (an empty temporary directory), and --upstream with a fake resolver that knows ScenarioNames (then
// in Unicorn.Upstream). It waits at most StartTimeout for the banner's DNS
// and proxy addresses and fails tb with unicorn's stderr otherwise. The
// process is stopped when tb ends (see Stop); a non-zero exit then fails
// tb, so do data races when the tests run with -race.
func Start(tb testing.TB, args ...string) *Unicorn {
	tb.Helper()
	var up *DNS
	if !hasFlag(args, "upstream") {
		up = NewDNS()
		for _, n := range ScenarioNames {
			up.Map(n, loopback)
		}
		addr, _ := up.Start(tb)
		args = append([]string{"--upstream", addr}, args...)
	}
	// An empty CA directory of its own: no test sees the user's CA.
	for _, d := range [][2]string{{"dns", "127.0.0.1:0"}, {"proxy", "127.0.0.1:0"}, {"control", "127.0.0.1:0"}, {"log-format", "json"}, {"ca-dir", tb.TempDir()}} {
		if !hasFlag(args, d[0]) {
			args = append([]string{"--" + d[0], d[1]}, args...)
		}
	}
	u, err := start(tb, args)
	if err != nil {
		tb.Fatal(err)
	}
	u.Upstream = up
	return u
}

// start runs `unicorn serve args` and waits for its banner. On error the
// process has exited or been stopped, and tb has not been failed.
func start(tb testing.TB, args []string) (*Unicorn, error) {
	tb.Helper()
	return launch(tb, append([]string{Binary(tb), "serve"}, args...), "")
}

// launch runs argv (a unicorn serve command line, perhaps behind `ip netns
// exec`) and waits for its banner; where, if set, says where it runs in
// errors. On error the process has exited or been stopped, and tb has not
// been failed.
func launch(tb testing.TB, argv []string, where string) (*Unicorn, error) {
	tb.Helper()
	u := &Unicorn{
		tb:     tb,
		cmd:    exec.Command(argv[0], argv[1:]...),
		stdout: newLines(),
		stderr: newLines(),
		exited: make(chan struct{}),
	}
	if where != "" {
		where = " in " + where
	}
	u.cmd.Env = cleanEnv()
	u.cmd.Stdout, u.cmd.Stderr = u.stdout, u.stderr
	u.cmd.WaitDelay = pipeDelay
	if err := u.cmd.Start(); err != nil {
		return u, fmt.Errorf("testbed: starting unicorn%s: %v", where, err)
	}
	go func() {
		u.waitErr = u.cmd.Wait()
		close(u.exited)
	}()
	tb.Cleanup(u.cleanup)

	ok := u.stdout.waitFor(StartTimeout, u.exited, func(all []string) bool {
		u.DNS, u.Proxy = bannerAddr(all, "DNS"), bannerAddr(all, "proxy")
		return u.DNS != "" && u.Proxy != ""
	})
	if !ok {
		exit := u.Stop()
		u.reported = true
		return u, fmt.Errorf("testbed: %s%s printed no DNS and proxy address within %v (exit: %v)\nstdout:\n%s\nstderr:\n%s",
			strings.Join(argv, " "), where, StartTimeout, exit, u.stdout, u.stderr)
	}
	u.Banner, _ = u.stdout.snapshot()
	// The control line comes before the DNS and proxy lines.
	if c := bannerAddr(u.Banner, "control"); c != "off" {
		u.Control = c
		u.ControlToken = bannerToken(u.Banner)
	}
	u.ProxyURL = &url.URL{Scheme: "http", Host: u.Proxy}
	return u, nil
}

// loopback is where the fake internet lives.
var loopback = mustAddr("127.0.0.1")

// hasFlag reports whether args set --name (or -name, either with =).
func hasFlag(args []string, name string) bool {
	return slices.ContainsFunc(args, func(a string) bool {
		if !strings.HasPrefix(a, "-") {
			return false // a value, not a flag
		}
		a = strings.TrimLeft(a, "-")
		return a == name || strings.HasPrefix(a, name+"=")
	})
}

// bannerAddr returns the address of the first banner line that starts
// with label ("DNS    127.0.0.1:5353   try: ..."), or "".
func bannerAddr(all []string, label string) string {
	for _, l := range all {
		f := strings.Fields(l)
		if len(f) >= 2 && f[0] == label {
			return f[1]
		}
	}
	return ""
}

// bannerToken returns the generated token of the control line
// ("control ADDR ... token T (generated; ...)"), or "".
func bannerToken(all []string) string {
	for _, l := range all {
		f := strings.Fields(l)
		if len(f) < 2 || f[0] != "control" {
			continue
		}
		for i := 2; i+2 < len(f); i++ {
			if f[i] == "token" && strings.HasPrefix(f[i+2], "(generated") {
				return f[i+1]
			}
		}
	}
	return ""
}

// cleanEnv is the environment without UNICORN_* variables, which would
// change the rules the binary loads. A race-enabled binary would sleep a
// second at exit (GORACE atexit_sleep_ms); every Run and Stop would pay it.
func cleanEnv() []string {
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return strings.HasPrefix(kv, "UNICORN_") || strings.HasPrefix(kv, "GORACE=")
	})
	return append(env, "GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
}

// Pid returns the process id of unicorn.
func (u *Unicorn) Pid() int { return u.cmd.Process.Pid }

// Stderr returns everything unicorn wrote to stderr so far.
func (u *Unicorn) Stderr() string { return u.stderr.String() }

// Logs returns the JSON log lines unicorn has written so far.
func (u *Unicorn) Logs() []LogLine {
	all, _ := u.stderr.snapshot()
	return parseLogs(all)
}

// WaitLog waits at most LogTimeout for a JSON log line whose attributes
// include want (compared as LogLine.Str gives them) and returns it; it
// fails tb, the calling test, with the log so far otherwise. A line is
// written before the answer it logs is sent, but may reach the test a
// moment after it.
func (u *Unicorn) WaitLog(tb testing.TB, want map[string]string) LogLine {
	tb.Helper()
	var got LogLine
	found := u.stderr.waitFor(LogTimeout, u.exited, func(all []string) bool {
		for _, l := range parseLogs(all) {
			if l.Has(want) {
				got = l
				return true
			}
		}
		return false
	})
	if !found {
		tb.Fatalf("testbed: no log line with %v within %v; stderr:\n%s", want, LogTimeout, u.stderr)
	}
	return got
}

// Stop stops unicorn by its own process id: SIGTERM, then SIGKILL if it
// has not exited within 5 s. It returns what Wait returned, or an error
// saying it had to be killed. It may be called more than once.
func (u *Unicorn) Stop() error {
	select {
	case <-u.exited:
		return u.waitErr
	default:
	}
	u.stopped = true
	if err := u.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		u.tb.Logf("testbed: SIGTERM to unicorn (pid %d): %v", u.Pid(), err)
	}
	t := time.NewTimer(stopTimeout)
	defer t.Stop()
	select {
	case <-u.exited:
		return u.waitErr
	case <-t.C:
	}
	u.cmd.Process.Kill()
	t.Reset(stopTimeout)
	select {
	case <-u.exited:
	case <-t.C:
		return fmt.Errorf("unicorn (pid %d) did not exit within %v of SIGKILL", u.Pid(), stopTimeout)
	}
	return fmt.Errorf("unicorn (pid %d) ignored SIGTERM for %v and was killed", u.Pid(), stopTimeout)
}

// cleanup stops unicorn at the end of the test and fails it unless
// unicorn exited cleanly on SIGTERM.
func (u *Unicorn) cleanup() {
	if u.reported {
		return
	}
	select {
	case <-u.exited:
		if !u.stopped {
			u.tb.Errorf("testbed: unicorn (pid %d) exited by itself during the test: %v\nstderr:\n%s", u.Pid(), u.waitErr, u.stderr)
			return
		}
	default:
	}
	if err := u.Stop(); err != nil {
		u.tb.Errorf("testbed: stopping unicorn (pid %d): %v\nstderr:\n%s", u.Pid(), err, u.stderr)
	}
}
