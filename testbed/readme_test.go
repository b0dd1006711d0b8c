package testbed_test

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chaos-unicorn/unicorn/rules"
	"github.com/chaos-unicorn/unicorn/testbed"
	"github.com/miekg/dns"
)

// TestReadmeTryIt runs the "Try it" block of README.md: each command, with
// the started binary's ports in place of the defaults the README shows,
// must do what its comment says. A command or a comment this test cannot
// check fails it, so the README cannot drift from the binary unnoticed.
func TestReadmeTryIt(t *testing.T) {
	t.Parallel()
	root, err := testbed.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	block := tryItBlock(t, filepath.Join(root, "README.md"))
	rt := &readmeRun{t: t, root: root, world: testbed.NewWorld(t), defaults: serveDefaults(t), engine: builtinEngine(t)}
	type command struct {
		readmeLine
		args    []string
		comment string
	}
	var cmds []command
	for _, l := range block {
		cmd, comment, _ := strings.Cut(l.text, "#")
		if args := strings.Fields(cmd); len(args) > 0 { // else a comment line ("# in another terminal:")
			cmds = append(cmds, command{l, args, strings.TrimSpace(comment)})
			if slices.Equal(args, []string{"make", "run"}) && rt.u == nil {
				// Started here, not in the subtest, so that it outlives it:
				// as make run would, with no rules and serve's defaults but
				// for the ports and the upstream.
				rt.u = rt.world.Start(t)
			}
		}
	}
	if len(cmds) < 3 {
		t.Errorf("the Try it block has %d commands; the parser is probably wrong", len(cmds))
	}
	for _, c := range cmds {
		t.Run(fmt.Sprintf("README.md:%d", c.num), func(t *testing.T) {
			rt.t = t
			t.Log(strings.TrimSpace(c.text))
			rt.check(c.args, c.comment)
		})
	}
}

// readmeLine is one line of a README code block and its line number.
type readmeLine struct {
	num  int
	text string
}

// tryItBlock returns the lines of the first code block after "## Try it".
func tryItBlock(t *testing.T, path string) []readmeLine {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []readmeLine
	section, inBlock := false, false
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		l := sc.Text()
		switch {
		case strings.HasPrefix(l, "## "):
			section = strings.TrimSpace(l[3:]) == "Try it"
		case section && strings.HasPrefix(l, "```"):
			if inBlock {
				return out
			}
			inBlock = true
		case inBlock:
			out = append(out, readmeLine{n, l})
		}
	}
	t.Fatalf("%s: no code block under \"## Try it\"", path)
	return nil
}

// serveDefaults returns the default --dns and --proxy addresses that
// `unicorn serve --help` shows: the ones `make run` listens on.
func serveDefaults(t *testing.T) map[string]string {
	t.Helper()
	r := testbed.Run(t, "serve", "--help")
	out := map[string]string{}
	for _, flag := range []string{"dns", "proxy"} {
		m := regexp.MustCompile(`--` + flag + ` ADDR.*\(default: "([^"]+)"\)`).FindStringSubmatch(r.Stdout)
		if m == nil {
			t.Fatalf("serve --help shows no default for --%s:\n%s", flag, r.Stdout)
		}
		out[flag] = m[1]
	}
	return out
}

// builtinEngine is the engine of the built-in default scenarios: what
// the README's comments are about.
func builtinEngine(t *testing.T) *rules.Engine {
	t.Helper()
	set, err := rules.Builtin()
	if err != nil {
		t.Fatal(err)
	}
	e, err := rules.NewEngine(set, set.Defaults())
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// readmeRun carries the state of one walk through the block: `make run`
// starts unicorn, the later lines talk to it.
type readmeRun struct {
	t        *testing.T
	root     string
	world    *testbed.World
	defaults map[string]string // serve's default "dns" and "proxy" addresses
	engine   *rules.Engine
	u        *testbed.Unicorn // started when the block has `make run`
	ran      bool             // `make run` was checked: later lines may use u
}

func (r *readmeRun) check(args []string, comment string) {
	t := r.t
	switch {
	case slices.Equal(args, []string{"make", "run"}):
		r.makeRun()
	case args[0] == "dig":
		r.dig(args[1:], comment)
	case args[0] == "curl":
		r.curl(args[1:], comment)
	case filepath.Base(args[0]) == "unicorn" && len(args) == 3 && args[1] == "explain":
		r.explain(args[2], comment)
	default:
		t.Errorf("no check for the command %q: teach readme_test.go", strings.Join(args, " "))
	}
}

// makeRun checks that `make run` runs `unicorn serve`; the test started
// the binary as it would, on free ports and the fake upstream.
func (r *readmeRun) makeRun() {
	t := r.t
	mk, err := os.ReadFile(filepath.Join(r.root, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	recipe := regexp.MustCompile(`(?m)^run:.*\n((?:\t.*\n)+)`).FindSubmatch(mk)
	if recipe == nil || !regexp.MustCompile(`(unicorn|\$\(BIN\))\S* serve\b`).Match(recipe[1]) {
		t.Fatalf("Makefile: the run target does not run unicorn serve")
	}
	r.ran = true
}

// need returns the unicorn `make run` started, or fails.
func (r *readmeRun) need() *testbed.Unicorn {
	if !r.ran {
		r.t.Fatal("this line needs `make run` earlier in the block")
	}
	return r.u
}

// swap checks that a README address is serve's default for flag and
// returns the address the started binary really listens on.
func (r *readmeRun) swap(flag, readmeAddr, real string) string {
	if readmeAddr != r.defaults[flag] {
		r.t.Errorf("the README talks to %s, but serve's default --%s is %s", readmeAddr, flag, r.defaults[flag])
	}
	return real
}

var (
	claimNXDomain  = regexp.MustCompile(`\bNXDOMAIN\b`)
	claimEDE       = regexp.MustCompile(`EDE "([^"]+)"`)
	claimForwarded = regexp.MustCompile(`\bforwarded\b`)
	claimStatus    = regexp.MustCompile(`\b([1-5]\d\d)\b`)
	claimNaming    = regexp.MustCompile(`naming scenario and rule`)
	claimRefused   = regexp.MustCompile(`CONNECT refused`)
	claimAtOnce    = regexp.MustCompile(`at once`)
	claimCluster   = regexp.MustCompile(`Status cluster rule`)
	claimLayers    = regexp.MustCompile(`layer by layer`)
)

// dig runs `dig @HOST -p PORT NAME` with miekg/dns over UDP.
func (r *readmeRun) dig(args []string, comment string) {
	t := r.t
	var host, port, name string
	for i := 0; i < len(args); i++ {
		switch a := args[i]; {
		case strings.HasPrefix(a, "@"):
			host = a[1:]
		case a == "-p" && i+1 < len(args):
			i++
			port = args[i]
		case !strings.HasPrefix(a, "-") && !strings.HasPrefix(a, "+"):
			name = a
		default:
			t.Fatalf("dig option %q: teach readme_test.go", a)
		}
	}
	if port == "" {
		port = "53"
	}
	server := r.swap("dns", net.JoinHostPort(host, port), r.need().DNS)
	m := ask(t, server, "udp", name, dns.TypeA)
	claims := 0
	if claimNXDomain.MatchString(comment) {
		claims++
		if m.Rcode != dns.RcodeNameError {
			t.Errorf("%s: rcode %s, the README says NXDOMAIN", name, dns.RcodeToString[m.Rcode])
		}
	}
	if c := claimEDE.FindStringSubmatch(comment); c != nil {
		claims++
		if e := ede(m); e == nil || e.ExtraText != c[1] {
			t.Errorf("%s: EDE %v, the README says %q", name, e, c[1])
		}
	}
	if claimForwarded.MatchString(comment) {
		claims++
		want := addrStrings(r.world.DNS, name)
		if m.Rcode != dns.RcodeSuccess || !slices.Equal(answerAddrs(m), want) || r.world.DNS.Questions(name) == 0 {
			t.Errorf("%s: rcode %s, answers %v, upstream asked %d times; the README says forwarded (upstream answers %v)",
				name, dns.RcodeToString[m.Rcode], answerAddrs(m), r.world.DNS.Questions(name), want)
		}
	}
	if claims == 0 {
		t.Errorf("no check for the comment %q: teach readme_test.go", comment)
	}
}

// curl runs `curl -x PROXY URL` with an http.Client.
func (r *readmeRun) curl(args []string, comment string) {
	t := r.t
	var proxyArg, target string
	for i := 0; i < len(args); i++ {
		switch a := args[i]; {
		case a == "-x" && i+1 < len(args):
			i++
			proxyArg = args[i]
		case !strings.HasPrefix(a, "-"):
			target = a
		default:
			t.Fatalf("curl option %q: teach readme_test.go", a)
		}
	}
	pu, err := url.Parse(proxyArg)
	if err != nil {
		t.Fatalf("curl -x %q: %v", proxyArg, err)
	}
	r.swap("proxy", pu.Host, r.need().Proxy)
	tu, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	c := newProxyClient(r.u)
	f := c.get(target)

	// What the rules say about this request: the comments are about it.
	p := 80
	if tu.Scheme == "https" {
		p = 443
	}
	if tu.Port() != "" {
		p, _ = strconv.Atoi(tu.Port())
	}
	d := r.engine.Decide(rules.Flow{Client: netip.MustParseAddr("127.0.0.1"), Layer: rules.LayerHTTP,
		Host: tu.Hostname(), Port: uint16(p), Proto: rules.ProtoTCP})

	status, header := 0, f.respHeader()
	if tu.Scheme == "https" {
		status, header = c.lastConnect()
	} else if f.resp != nil {
		status = f.resp.StatusCode
	}
	claims := 0
	if c := claimStatus.FindStringSubmatch(comment); c != nil {
		claims++
		if strconv.Itoa(status) != c[1] {
			t.Errorf("%s: status %d (%s), the README says %s", target, status, describe(f), c[1])
		}
	}
	if claimNaming.MatchString(comment) {
		claims++
		if d.Rule == nil {
			t.Fatalf("%s: no rule decides it, yet the README says a page names one", target)
		}
		ref := d.Rule.Ref()
		if header.Get("X-Unicorn-Scenario") != d.Scenario() || header.Get("X-Unicorn-Rule") != ref ||
			!strings.Contains(f.body, d.Scenario()) || !strings.Contains(f.body, ref) {
			t.Errorf("%s: %s; the README says the page names scenario %s and rule %s", target, describe(f), d.Scenario(), ref)
		}
	}
	if claimRefused.MatchString(comment) {
		claims++
		if tu.Scheme != "https" || f.err == nil || status == 200 {
			t.Errorf("%s: %s, CONNECT answered %d; the README says the tunnel is refused", target, describe(f), status)
		}
	}
	if claimAtOnce.MatchString(comment) {
		claims++
		if f.elapsed > time.Second {
			t.Errorf("%s: took %v, the README says at once", target, f.elapsed)
		}
	}
	if claims == 0 {
		t.Errorf("no check for the comment %q: teach readme_test.go", comment)
	}
}

// respHeader returns the response's headers, or none.
func (f fetched) respHeader() http.Header {
	if f.resp == nil {
		return nil
	}
	return f.resp.Header
}

// explain runs `unicorn explain TARGET` with the built binary.
func (r *readmeRun) explain(target, comment string) {
	t := r.t
	out := testbed.Run(t, "explain", target)
	if out.Code != 0 {
		t.Fatalf("explain %s: exit %d, stderr %s", target, out.Code, out.Stderr)
	}
	claims := 0
	if claimCluster.MatchString(comment) || claimLayers.MatchString(comment) {
		ap, err := netip.ParseAddrPort(target)
		if err != nil {
			t.Fatalf("explain %s: this check wants address:port: %v", target, err)
		}
		for _, layer := range []rules.Layer{rules.LayerHTTP, rules.LayerTCP} {
			d := r.engine.Decide(rules.Flow{Layer: layer, Addr: ap.Addr(), Port: ap.Port(), Proto: rules.ProtoTCP})
			label := strings.ToUpper(layer.String())
			if claimLayers.MatchString(comment) && !hasLine(out.Stdout, label, d.String()) {
				t.Errorf("explain %s: no %s line with %q:\n%s", target, label, d.String(), out.Stdout)
			}
			if claimCluster.MatchString(comment) && (d.Rule == nil || !strings.HasPrefix(d.Rule.Service, "status-cluster") ||
				!strings.Contains(out.Stdout, "service "+d.Rule.Service)) {
				t.Errorf("explain %s at %s: decided by %v; the README says the Status cluster rule:\n%s", target, label, d, out.Stdout)
			}
		}
		claims++
	}
	if claims == 0 {
		t.Errorf("no check for the comment %q: teach readme_test.go", comment)
	}
}
