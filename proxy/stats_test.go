package proxy_test

import (
	"io"
	"testing"
	"time"
)

// TestStats: a CONNECT tunnel counts one connection and one tunnel, and
// the bytes it carried each way once it has ended.
func TestStats(t *testing.T) {
	up := newUpstream(t, true)
	w := newWorld(t, worldConfig{Hosts: testHosts})
	c := w.client(10*time.Second, up.Roots(), "")
	resp, err := c.Get(up.URLFor("127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	io.ReadAll(resp.Body)
	resp.Body.Close()
	c.CloseIdleConnections()
	deadline := time.Now().Add(5 * time.Second)
	for w.Proxy.Stats().Open != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	st := w.Proxy.Stats()
	if st.Connections != 1 || st.Tunnels != 1 || st.Open != 0 {
		t.Errorf("stats %+v; want 1 connection, 1 tunnel, none open", st)
	}
	// A TLS handshake and one request each way: some hundreds of bytes.
	if st.BytesUp < 100 || st.BytesDown < 100+uint64(len(Body)) {
		t.Errorf("tunnel bytes up %d, down %d; want a TLS exchange's worth each way", st.BytesUp, st.BytesDown)
	}
}
