package proxy_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/chaos-unicorn/unicorn/rules"
)

// bigUpstream is a plain HTTP origin that answers GET /N with N bytes.
func bigUpstream(t *testing.T) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Path[1:])
		w.Header().Set("Content-Length", strconv.Itoa(n))
		io.Copy(w, io.LimitReader(zeros{}, int64(n)))
	}))
	t.Cleanup(srv.Close)
	return srv
}

// TestPlainHTTPFaults applies byte faults to plain proxy requests, which
// goproxy's transport dials through the same fault wrapper as tunnels.
func TestPlainHTTPFaults(t *testing.T) {
	up := bigUpstream(t)
	t.Run("throttle", func(t *testing.T) {
		const rate, size = 128 << 10, 256 << 10
		w := newWorld(t, worldConfig{Decide: only(decision(rules.ActionThrottle, rules.Params{Rate: rate, Direction: rules.DirBoth}))})
		c := w.client(10*time.Second, nil, "")
		for range 2 { // the second request gets a new, throttled upstream connection too
			start := time.Now()
			resp, err := c.Get(up.URL + "/" + strconv.Itoa(size))
			if err != nil {
				t.Fatal(err)
			}
			n, err := io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if err != nil || n != size {
				t.Fatalf("body %d bytes, %v", n, err)
			}
			within(t, "256 KiB at 128 KiB/s", time.Since(start), 1800*time.Millisecond, 2300*time.Millisecond)
		}
	})
	t.Run("first_byte", func(t *testing.T) {
		w := newWorld(t, worldConfig{Decide: only(decision(rules.ActionDelay, rules.Params{Latency: 300 * time.Millisecond, DelayOn: rules.DelayOnFirstByte, Direction: rules.DirDown}))})
		start := time.Now()
		resp, err := w.client(10*time.Second, nil, "").Get(up.URL + "/10")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		within(t, "response", time.Since(start), 300*time.Millisecond, 600*time.Millisecond)
	})
	t.Run("cut", func(t *testing.T) {
		w := newWorld(t, worldConfig{Decide: only(decision(rules.ActionCut, rules.Params{AfterBytes: 100 << 10, Direction: rules.DirDown, Close: rules.CloseFIN}))})
		resp, err := w.client(10*time.Second, nil, "").Get(up.URL + "/1048576")
		if err != nil {
			t.Fatal(err)
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err == nil || n >= 100<<10 {
			t.Fatalf("body %d bytes, err %v; want it cut short of 100 KiB with an error", n, err)
		}
	})
}
