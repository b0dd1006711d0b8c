package testbed

import (
	"bytes"
	"context"
	"image"
	"image/png"
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

// TestOnboardingPageInChromium renders the device page in headless
// Chromium (Debian `chromium`, which .ci/run installs) and checks the
// rendered DOM and a screenshot for the CA download links.
//
// The QR code: the page shows it only when reached on an address a phone
// can route to; on loopback, the only address the tests use, it shows a
// hint instead (proxy/page.go, phoneHostPort). So the DOM is checked for
// the hint and for the absence of the QR svg, and the screenshot for the
// page's content, not for the QR code.
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
	u := Start(t, "--ca-dir", dir)
	page := "http://" + u.Proxy + "/"

	dom := runChromium(t, chromium, "--dump-dom", page)
	for _, href := range []string{"/ca.pem", "/ca.der", "/ca.mobileconfig"} {
		if !strings.Contains(string(dom), `href="`+href+`"`) {
			t.Errorf("the rendered page has no link to %s", href)
		}
	}
	if !strings.Contains(string(dom), `class="fp"`) {
		t.Errorf("the rendered page shows no CA fingerprint")
	}
	// Loopback: no QR code (a phone could not open 127.0.0.1), the hint instead.
	if strings.Contains(string(dom), `aria-label="QR code for URL"`) {
		t.Errorf("the page reached on loopback has a QR code; a phone cannot open %s", page)
	}
	if !strings.Contains(string(dom), "opened on the unicorn machine itself") {
		t.Errorf("the page reached on loopback does not say how to open it on the phone")
	}
	if t.Failed() {
		t.Logf("rendered DOM:\n%s", dom)
	}

	shot := filepath.Join(t.TempDir(), "page.png")
	runChromium(t, chromium, "--screenshot="+shot, page)
	f, err := os.Open(shot)
	if err != nil {
		t.Fatalf("chromium wrote no screenshot: %v", err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("screenshot %s: %v", shot, err)
	}
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
	if t.Failed() {
		keep := filepath.Join(os.TempDir(), "unicorn-onboarding-page.png")
		if b, err := os.ReadFile(shot); err == nil && os.WriteFile(keep, b, 0o644) == nil {
			t.Logf("screenshot kept at %s", keep)
		}
	}
}

// shades counts near-black, near-white and other pixels of img.
func shades(img image.Image) (dark, light, other int) {
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, _ := img.At(x, y).RGBA()
			l := (299*r + 587*g + 114*bl) / 1000 >> 8 // 0..255
			switch {
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

// runChromium runs headless chromium with args after the fixed flags,
// bounded by browserTimeout, and returns its stdout. Chromium is stopped
// by its process group id (it and the helpers it forks) on timeout.
func runChromium(t *testing.T, chromium string, args ...string) []byte {
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
	cmd := exec.CommandContext(ctx, chromium, append(flags, args...)...)
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
