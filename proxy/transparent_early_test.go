package proxy

import (
	"io"
	"net"
	"net/netip"
	"testing"
	"time"
)

// TestEarlyDialWakesALaterPeek: a server that speaks before the peek
// following the early dial has set its read deadline still ends that peek
// at once, instead of leaving the client waiting the whole peek bound.
func TestEarlyDialWakesALaterPeek(t *testing.T) {
	server, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	go func() {
		c, err := server.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.WriteString(c, "SSH-2.0-test\r\n")
		io.Copy(io.Discard, c) // until the early dial's connection is closed
	}()
	const bound = 5 * time.Second
	w := newTransparentWorldPeek(t, netip.MustParseAddrPort(server.Addr().String()), blockName("x", 0), nil, bound)

	// The client's side of a transparent connection, silent.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	client, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	c, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	e := w.px.dialEarly(c, netip.MustParseAddrPort(server.Addr().String()))
	defer e.finish(false)
	for deadline := time.Now().Add(bound); !e.spoke.Load(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the early dial never heard the server's banner")
		}
	}
	// Only now does the peek set its deadline, as a busy machine may
	// schedule it.
	start := time.Now()
	peek(e.peekConn(), nil, start.Add(bound))
	if el := time.Since(start); el > bound/2 {
		t.Errorf("the peek after the server spoke took %v; it should end at once, not at its %v bound", el, bound)
	}
}
