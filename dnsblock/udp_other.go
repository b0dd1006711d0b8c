//go:build !linux

package dnsblock

// batch is empty where recvmmsg does not exist: read reads one datagram
// at a time.
type batch struct{}

func (b *batch) queue(slot int, reply, oob []byte) {}

func (u *udpServer) readBatches(r *udpReader) error { return errNoBatch }
