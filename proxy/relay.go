package proxy

import (
	"io"
	"net"
)

// relay copies bytes both ways between the client and the upstream until
// both directions have ended. When one side finishes sending, the other
// side's write half is closed, so protocols that half-close keep working;
// when a copy fails, both connections are closed so the other copy ends
// too. The caller closes both afterwards. It returns the bytes copied
// from the client to the upstream and back.
func relay(client, upstream net.Conn) (sent, received int64) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		sent = pipe(upstream, client)
	}()
	received = pipe(client, upstream)
	<-done
	return sent, received
}

// pipe copies src to dst. Between two *net.TCPConn it is a plain io.Copy,
// which Go turns into splice(2) on Linux: the bytes do not pass through
// user space. Other connections (a custom Config.Dial) are copied through
// a buffer. It returns the number of bytes copied.
func pipe(dst, src net.Conn) int64 {
	var n int64
	var err error
	dt, dok := dst.(*net.TCPConn)
	st, sok := src.(*net.TCPConn)
	if dok && sok {
		n, err = io.Copy(dt, st)
	} else {
		n, err = io.Copy(dst, src)
	}
	if err == nil { // src ended cleanly: pass the end on, keep the other way open
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
			return n
		}
	}
	dst.Close()
	src.Close()
	return n
}
