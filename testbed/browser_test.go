package testbed

import (
	"bytes"
	"context"
	"image"
	"image/png"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// browserTimeout bounds each chromium run.
const browserTimeout = 60 * time.Second

// browserWidth is the window width chromium renders the page at: a phone.
const browserWidth = 412

// The phone test's network, in namespaces the test creates: RFC 5737
// documentation addresses, routed nowhere.
const (
	laptopAddr = "192.0.2.10"
	phoneAddr  = "192.0.2.1"
)

// TestOnboardingPageInChromium renders the device page in headless
// Chromium (Debian `chromium`, which .ci/run installs) and checks the
// rendered DOM and a screenshot for the CA download links and the QR code.
//
// The QR code: the page shows it only when reached on an address a phone
// can route to; on loopback it shows a hint instead (proxy/page.go,
// phoneHostPort). So the test renders the page twice:
//
//   - loopback: unicorn on 127.0.0.1, the hint and no QR svg in the DOM,
//     and no QR code found in the screenshot;
//   - phone: unicorn in a network namespace "laptop" on 192.0.2.10,
//     chromium in a namespace "phone" on 192.0.2.1, linked by a veth pair;
//     the QR svg for http://192.0.2.10:8080/ in the DOM, and a QR code
//     (three finder patterns, a timing pattern) found in the screenshot.
//     It needs root and `ip netns`, and is skipped without them.
//
// It runs when UNICORN_BROWSER_TESTS=1 or CI=true (and then fails if
// chromium is missing); otherwise, and under -short, it is skipped.
func TestOnboardingPageInChromium(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping the headless Chromium test")
	}
	if os.Getenv("UNICORN_BROWSER_TESTS") != "1" && os.Getenv("CI") != "true" {
		t.Skip("set UNICORN_BROWSER_TESTS=1 (or CI=true) to render the onboarding page in headless Chromium (apt-get install chromium; .ci/run installs it)")
	}
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("chromium is not on PATH (UNICORN_BROWSER_TESTS=1 or CI=true asks for the browser test): apt-get install -y --no-install-recommends chromium, which .ci/run does")
	}
	dir := filepath.Join(t.TempDir(), "ca")
	if out := Run(t, "ca", "init", "--dir", dir); out.Code != 0 {
		t.Fatalf("ca init: exit %d\n%s", out.Code, out.Stderr)
	}

	t.Run("loopback", func(t *testing.T) {
		u := Start(t, "--ca-dir", dir)
		page := "http://" + u.Proxy + "/"
		dom := string(runChromium(t, []string{chromium}, "--dump-dom", page))
		checkCALinks(t, dom)
		// Loopback: no QR code (a phone could not open 127.0.0.1), the hint instead.
		if strings.Contains(dom, `aria-label="QR code for`) {
			t.Errorf("the page reached on loopback has a QR code; a phone cannot open %s", page)
		}
		if !strings.Contains(dom, "opened on the unicorn machine itself") {
			t.Errorf("the page reached on loopback does not say how to open it on the phone")
		}
		if t.Failed() {
			t.Logf("rendered DOM:\n%s", dom)
		}
		img, shot := screenshot(t, []string{chromium}, page)
		checkScreenshot(t, img)
		if q, ok := findQR(img); ok {
			t.Errorf("the screenshot of the page reached on loopback has a QR code at %v", q.Rect)
		}
		keepOnFailure(t, shot, "loopback")
	})

	t.Run("phone", func(t *testing.T) {
		if why := NetnsUnavailable(); why != "" {
			t.Skipf("skipping the page as a phone sees it, in network namespaces: %s", why)
		}
		// Created before unicorn starts: removed after it is stopped.
		laptop := NewNetns(t, "page-laptop")
		phone := NewNetns(t, "page-phone")
		Veth(t, laptop, laptopAddr+"/24", phone, phoneAddr+"/24")
		hp := laptopAddr + ":8080"
		u := StartIn(t, laptop, "--proxy", hp, "--dns", laptopAddr+":5353",
			// Never asked: the test opens only unicorn's own page.
			"--upstream", laptopAddr+":9",
			// 192.0.2.0/24 is not among the default private ranges.
			"--allow-clients", "192.0.2.0/24",
			"--ca-dir", dir, "--log-format", "json")
		if u.Proxy != hp {
			t.Fatalf("unicorn's banner says proxy %s, want %s", u.Proxy, hp)
		}
		page := "http://" + hp + "/"
		argv := phone.Exec(chromium)
		dom := string(runChromium(t, argv, "--dump-dom", page))
		checkCALinks(t, dom)
		if !strings.Contains(dom, `aria-label="QR code for `+page+`"`) {
			t.Errorf("the page reached on %s has no QR svg for %s", hp, page)
		}
		if !strings.Contains(dom, `<a href="`+page+`">`+page+`</a>`) {
			t.Errorf("the page reached on %s does not show its URL %s", hp, page)
		}
		if strings.Contains(dom, "opened on the unicorn machine itself") {
			t.Errorf("the page reached on %s says it was opened on the unicorn machine", hp)
		}
		if t.Failed() {
			t.Logf("rendered DOM:\n%s", dom)
		}
		img, shot := screenshot(t, argv, page)
		checkScreenshot(t, img)
		q, ok := findQR(img)
		if !ok {
			t.Errorf("no QR code found in the screenshot (three finder patterns in an L with a timing pattern between them)")
		} else {
			t.Logf("QR code in the screenshot: %v, %d modules of %.1f px, %.0f%% dark", q.Rect, q.Modules, q.Module, 100*q.Dark)
			// 9em at 17px: 153 px with the quiet zone, ~116 px without.
			if w := q.Rect.Dx(); w < 80 || w > 250 {
				t.Errorf("QR code is %d px wide, want 80..250 (9em less the quiet zone)", w)
			}
			if !q.Rect.In(img.Bounds()) {
				t.Errorf("QR code %v is not wholly inside the screenshot %v", q.Rect, img.Bounds())
			}
			if q.Dark < 0.3 || q.Dark > 0.7 {
				t.Errorf("QR code area is %.0f%% dark, want 30..70%%", 100*q.Dark)
			}
		}
		keepOnFailure(t, shot, "phone")
	})
}

// checkCALinks checks the rendered DOM for the CA download links and
// fingerprint.
func checkCALinks(t *testing.T, dom string) {
	t.Helper()
	for _, href := range []string{"/ca.pem", "/ca.der", "/ca.mobileconfig"} {
		if !strings.Contains(dom, `href="`+href+`"`) {
			t.Errorf("the rendered page has no link to %s", href)
		}
	}
	if !strings.Contains(dom, `class="fp"`) {
		t.Errorf("the rendered page shows no CA fingerprint")
	}
}

// screenshot renders page with chromium (argv) and returns the decoded
// screenshot and its file.
func screenshot(t *testing.T, argv []string, page string) (image.Image, string) {
	t.Helper()
	shot := filepath.Join(t.TempDir(), "page.png")
	runChromium(t, argv, "--screenshot="+shot, page)
	f, err := os.Open(shot)
	if err != nil {
		t.Fatalf("chromium wrote no screenshot: %v", err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("screenshot %s: %v", shot, err)
	}
	return img, shot
}

// checkScreenshot checks the screenshot's width and that it shows a page
// with content.
func checkScreenshot(t *testing.T, img image.Image) {
	t.Helper()
	b := img.Bounds()
	if b.Dx() != browserWidth {
		t.Errorf("screenshot is %d px wide, want %d (--window-size)", b.Dx(), browserWidth)
	}
	dark, light, gray := shades(img)
	total := b.Dx() * b.Dy()
	t.Logf("screenshot %dx%d: %d dark, %d light, %d gray pixels", b.Dx(), b.Dy(), dark, light, gray)
	// Robust bounds, no pixel matching: a white page (light > 60%) with
	// text on it (dark > 0.5%: headings, paragraphs, the download buttons).
	if light < total*6/10 {
		t.Errorf("screenshot is not mostly light background: %d of %d pixels", light, total)
	}
	if dark < total/200 {
		t.Errorf("screenshot looks blank: %d dark pixels of %d", dark, total)
	}
}

// keepOnFailure copies the screenshot to the temporary directory when t
// has failed, so that it can be looked at.
func keepOnFailure(t *testing.T, shot, name string) {
	t.Helper()
	if !t.Failed() {
		return
	}
	keep := filepath.Join(os.TempDir(), "unicorn-onboarding-page-"+name+".png")
	if b, err := os.ReadFile(shot); err == nil && os.WriteFile(keep, b, 0o644) == nil {
		t.Logf("screenshot kept at %s", keep)
	}
}

// shades counts near-black, near-white and other pixels of img.
func shades(img image.Image) (dark, light, other int) {
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			switch l := luma(img, x, y); {
			case l < 80:
				dark++
			case l > 230:
				light++
			default:
				other++
			}
		}
	}
	return
}

// luma is the brightness of img at (x, y), 0..255.
func luma(img image.Image, x, y int) uint32 {
	r, g, b, _ := img.At(x, y).RGBA()
	return (299*r + 587*g + 114*b) / 1000 >> 8
}

// qrFound is a QR code located in a screenshot.
type qrFound struct {
	Rect    image.Rectangle // the symbol, without its quiet zone
	Module  float64         // module size in pixels
	Modules int             // modules per side
	Dark    float64         // fraction of dark pixels in Rect
}

// finder is the center of a QR finder pattern and its module size.
type finder struct{ x, y, m float64 }

// findQR looks for a QR code in img the way a scanner does: finder
// patterns (dark:light:dark:light:dark runs of 1:1:3:1:1 modules, across
// and down), three of them at the corners of an L with equal legs, a
// valid number of modules (21, 25, 29, ...) between them, and the timing
// pattern (alternating modules) along the row between the top two.
func findQR(img image.Image) (qrFound, bool) {
	b := img.Bounds()
	dark := func(x, y int) bool {
		return image.Pt(x, y).In(b) && luma(img, x, y) < 128
	}
	var hits []finder
	for y := b.Min.Y; y < b.Max.Y; y++ {
		runs := runsAlong(b.Min.X, b.Max.X, func(i int) bool { return dark(i, y) })
		for _, h := range finderRuns(runs) {
			// Cross-check down the center column.
			col := runsAlong(b.Min.Y, b.Max.Y, func(i int) bool { return dark(int(h.c), i) })
			for _, v := range finderRuns(col) {
				if v.lo <= float64(y) && float64(y) < v.hi && math.Abs(v.m-h.m) <= h.m/2 {
					hits = append(hits, finder{h.c, v.c, (h.m + v.m) / 2})
				}
			}
		}
	}
	// One center per pattern: merge hits closer than two modules.
	var fs []finder
	var counts []int
	for _, h := range hits {
		merged := false
		for i, f := range fs {
			if math.Abs(f.x-h.x) <= 2*f.m && math.Abs(f.y-h.y) <= 2*f.m {
				n := float64(counts[i])
				fs[i] = finder{(f.x*n + h.x) / (n + 1), (f.y*n + h.y) / (n + 1), (f.m*n + h.m) / (n + 1)}
				counts[i]++
				merged = true
				break
			}
		}
		if !merged {
			fs = append(fs, h)
			counts = append(counts, 1)
		}
	}
	for _, a := range fs { // top left
		for _, r := range fs { // top right
			for _, d := range fs { // bottom left
				m := (a.m + r.m + d.m) / 3
				near := func(p, q float64) bool { return math.Abs(p-q) <= 1.5*m }
				if r.x <= a.x || d.y <= a.y || !near(a.y, r.y) || !near(a.x, d.x) || !near(r.x-a.x, d.y-a.y) {
					continue
				}
				if math.Abs(r.m-a.m) > m/3 || math.Abs(d.m-a.m) > m/3 {
					continue
				}
				side := ((r.x - a.x) + (d.y - a.y)) / 2
				n := int(math.Round(side/m)) + 7
				if n < 21 || (n-17)%4 != 0 {
					continue
				}
				m = side / float64(n-7) // finer, from the whole distance
				// Timing pattern: row 6, modules 8..n-9, dark on even ones.
				ty := a.y + 3*m
				timing := true
				for i := 8; i <= n-9 && timing; i++ {
					tx := a.x + (float64(i)-3)*m
					timing = dark(int(tx), int(ty)) == (i%2 == 0)
				}
				if !timing {
					continue
				}
				rect := image.Rect(int(math.Round(a.x-3.5*m)), int(math.Round(a.y-3.5*m)),
					int(math.Round(r.x+3.5*m)), int(math.Round(d.y+3.5*m)))
				var nd, all int
				for y := rect.Min.Y; y < rect.Max.Y; y++ {
					for x := rect.Min.X; x < rect.Max.X; x++ {
						all++
						if dark(x, y) {
							nd++
						}
					}
				}
				return qrFound{Rect: rect, Module: m, Modules: n, Dark: float64(nd) / float64(max(all, 1))}, true
			}
		}
	}
	return qrFound{}, false
}

// run is a run of equal pixels along a line: [start, start+n).
type run struct {
	start, n int
	dark     bool
}

// runsAlong splits [lo, hi) into runs of equal dark(i).
func runsAlong(lo, hi int, dark func(int) bool) []run {
	var rs []run
	for i := lo; i < hi; i++ {
		d := dark(i)
		if len(rs) > 0 && rs[len(rs)-1].dark == d {
			rs[len(rs)-1].n++
			continue
		}
		rs = append(rs, run{i, 1, d})
	}
	return rs
}

// finderSpan is a 1:1:3:1:1 dark:light:dark:light:dark span of runs: its
// center, module size, and the extent of its middle run.
type finderSpan struct{ c, m, lo, hi float64 }

// finderRuns returns the finder-pattern spans in rs.
func finderRuns(rs []run) []finderSpan {
	var out []finderSpan
	for i := 0; i+5 <= len(rs); i++ {
		if !rs[i].dark {
			continue
		}
		total := 0
		for _, r := range rs[i : i+5] {
			total += r.n
		}
		m := float64(total) / 7
		if m < 2 {
			continue // too small to be a QR code on a page
		}
		ok := true
		for j, want := range []float64{1, 1, 3, 1, 1} {
			if math.Abs(float64(rs[i+j].n)-want*m) > m/2+1 {
				ok = false
			}
		}
		if ok {
			mid := rs[i+2]
			out = append(out, finderSpan{float64(mid.start) + float64(mid.n)/2, m, float64(mid.start), float64(mid.start + mid.n)})
		}
	}
	return out
}

// runChromium runs headless chromium, argv (chromium itself or a command
// that execs it in place, such as `ip netns exec NAME chromium`), with the
// fixed flags and args, bounded by browserTimeout, and returns its stdout.
// Chromium is stopped by its process group id (it and the helpers it
// forks) on timeout.
func runChromium(t *testing.T, argv []string, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), browserTimeout)
	defer cancel()
	flags := []string{
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
		"--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
		"--user-data-dir=" + t.TempDir(), "--window-size=412,900",
		// Nothing but the page: no proxy from the environment.
		"--no-proxy-server",
	}
	all := append(append(append([]string{}, argv[1:]...), flags...), args...)
	cmd := exec.CommandContext(ctx, argv[0], all...)
	cmd.Env = cleanEnv()
	// Its own process group, so that the renderer and the other helper
	// processes it forks go with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	err := cmd.Wait()
	// Helpers left in its process group (none, normally), by its id, at
	// once: the group id cannot have been reused while they live.
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	if ctx.Err() != nil {
		t.Fatalf("chromium %s did not finish within %v\nstderr:\n%s", strings.Join(args, " "), browserTimeout, stderr.String())
	}
	if err != nil {
		t.Fatalf("chromium %s: %v\nstderr:\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.Bytes()
}
