//go:build linux

package dnsblock

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// batchSize is how many datagrams one recvmmsg reads and one sendmmsg
// writes at most. Under load it cuts the system calls, and the Go runtime's
// work around each, by up to that much; an idle server reads one at a time
// as before.
const batchSize = 16

// mmsghdr is struct mmsghdr of recvmmsg(2) and sendmmsg(2); Go pads it as
// C does.
type mmsghdr struct {
	hdr unix.Msghdr
	n   uint32
}

// batch is a reader's buffers for reading and answering batchSize
// datagrams per system call. The kernel sees them through pointers in the
// headers; they stay reachable (and Go's heap does not move) as long as
// the batch is.
type batch struct {
	rhdrs []mmsghdr
	riovs []unix.Iovec
	names []unix.RawSockaddrInet6 // large enough for an IPv4 address too
	ins   [][]byte
	oobs  [][]byte // nil unless the listener is a wildcard

	shdrs []mmsghdr
	siovs []unix.Iovec
	outs  [][]byte // reply buffers, one per datagram read
	sends int      // replies queued in shdrs
	keep  [batchSize][]byte

	// The system calls, as functions for syscall.RawConn made once (a
	// closure made per call would be an allocation per call), with their
	// results.
	recv, send func(fd uintptr) bool
	n          int           // datagrams read by recv
	errno      syscall.Errno // of recv
	sent       int           // replies sent or skipped by send
}

func newBatch(oob bool) *batch {
	b := &batch{
		rhdrs: make([]mmsghdr, batchSize), riovs: make([]unix.Iovec, batchSize),
		names: make([]unix.RawSockaddrInet6, batchSize), ins: make([][]byte, batchSize),
		shdrs: make([]mmsghdr, batchSize), siovs: make([]unix.Iovec, batchSize),
		outs: make([][]byte, batchSize),
	}
	if oob {
		b.oobs = make([][]byte, batchSize)
	}
	for i := range batchSize {
		b.ins[i] = make([]byte, bufSize)
		b.outs[i] = make([]byte, 0, 2*ednsSize)
		b.riovs[i].Base = &b.ins[i][0]
		b.riovs[i].SetLen(bufSize)
		h := &b.rhdrs[i].hdr
		h.Name = (*byte)(unsafe.Pointer(&b.names[i]))
		h.Iov = &b.riovs[i]
		h.SetIovlen(1)
		if oob {
			b.oobs[i] = make([]byte, oobSize)
		}
	}
	return b
}

// readBatches is read with recvmmsg and sendmmsg. It returns errNoBatch
// before reading anything if they cannot be used; read then reads one
// datagram at a time.
func (u *udpServer) readBatches(r *udpReader) error {
	if u.noBatch {
		return errNoBatch
	}
	rc, err := u.conn.SyscallConn()
	if err != nil {
		return errNoBatch
	}
	b := newBatch(u.dst)
	r.batch = b
	b.recv = func(fd uintptr) bool {
		for i := range b.rhdrs {
			h := &b.rhdrs[i].hdr
			h.Namelen = unix.SizeofSockaddrInet6
			h.Flags = 0
			if b.oobs != nil {
				h.Control = &b.oobs[i][0]
				h.SetControllen(oobSize)
			}
		}
		// Non-blocking, so RawSyscall: the runtime need not hand the
		// thread over. EAGAIN parks the reader until the socket is
		// readable.
		r1, _, e := syscall.RawSyscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&b.rhdrs[0])),
			uintptr(len(b.rhdrs)), unix.MSG_DONTWAIT, 0, 0)
		if e == syscall.EAGAIN {
			return false
		}
		b.n, b.errno = int(r1), e
		return true
	}
	b.send = func(fd uintptr) bool {
		r1, _, e := syscall.RawSyscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&b.shdrs[b.sent])),
			uintptr(b.sends-b.sent), unix.MSG_DONTWAIT, 0, 0)
		switch {
		case e == syscall.EAGAIN:
			return false // wait until writable
		case e != 0:
			b.sent++ // the first one failed; skip it
		default:
			b.sent += int(r1)
		}
		return true
	}
	fails, worked := 0, false
	for { // until the socket is closed, or maxReadErrors
		b.n, b.errno = 0, 0
		err := rc.Read(b.recv)
		n, errno := b.n, b.errno
		switch {
		case err != nil && errors.Is(err, net.ErrClosed):
			return nil
		case err == nil && errno == syscall.EINTR:
			continue
		case err == nil && errno != 0 && !worked:
			// No recvmmsg here (an old kernel, a sandbox): read one
			// datagram at a time.
			r.batch = nil
			return errNoBatch
		case err != nil || errno != 0:
			if fails++; fails >= maxReadErrors {
				u.conn.Close()
				return cmpOr(err, error(errno))
			}
			time.Sleep(time.Duration(fails) * time.Millisecond)
			continue
		}
		fails, worked = 0, true
		for i := range n {
			r.slot = i
			r.out = b.outs[i][:0]
			r.w.to = b.addrPort(i)
			if b.oobs != nil {
				r.w.oob = r.src.reply(b.oobs[i][:b.rhdrs[i].hdr.Controllen])
			}
			r.handle(b.ins[i][:b.rhdrs[i].n])
		}
		b.flush(rc)
	}
}

// queue adds reply to the datagram of slot, from the source address in
// oob, to the replies the next flush sends.
func (b *batch) queue(slot int, reply, oob []byte) {
	i := b.sends
	b.keep[i] = reply
	b.siovs[i].Base = unsafe.SliceData(reply)
	b.siovs[i].SetLen(len(reply))
	h := &b.shdrs[i].hdr
	*h = unix.Msghdr{Name: b.rhdrs[slot].hdr.Name, Namelen: b.rhdrs[slot].hdr.Namelen, Iov: &b.siovs[i]}
	h.SetIovlen(1)
	if len(oob) > 0 {
		h.Control = &oob[0]
		h.SetControllen(len(oob))
	}
	b.sends++
}

// flush sends the queued replies. A reply the kernel refuses is skipped;
// the others still go.
func (b *batch) flush(rc syscall.RawConn) {
	b.sent = 0
	for range b.sends + 1 { // each round sends or skips at least one
		if b.sent >= b.sends || rc.Write(b.send) != nil { // an error: closed
			break
		}
	}
	b.keep = [batchSize][]byte{}
	b.sends = 0
}

// addrPort returns the source of datagram i. A zone is made only for
// link-local IPv6 clients (an allocation then).
func (b *batch) addrPort(i int) netip.AddrPort {
	sa := &b.names[i]
	port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:]) // network order
	if sa.Family == unix.AF_INET {
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), port)
	}
	a := netip.AddrFrom16(sa.Addr)
	if sa.Scope_id != 0 {
		a = a.WithZone(strconv.FormatUint(uint64(sa.Scope_id), 10))
	}
	return netip.AddrPortFrom(a, port)
}
