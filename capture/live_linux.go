package capture

import (
	"context"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"time"

	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
	"golang.org/x/sys/unix"
)

// Live captures frames on an interface through a Linux AF_PACKET socket
// (pure Go, no libpcap) and writes them to w as a pcap file, until ctx is
// done or the duration or packet limit is reached. It needs CAP_NET_RAW.
func Live(ctx context.Context, w io.Writer, opt LiveOptions) (LiveStats, error) {
	var st LiveStats
	if opt.Iface == "" {
		return st, errors.New("capture: no interface given")
	}
	snap := opt.Snaplen
	if snap <= 0 {
		snap = 65535
	}
	if err := CheckInterface(opt.Iface); err != nil {
		return st, err
	}
	h, err := pcapgo.NewEthernetHandle(opt.Iface)
	if err != nil {
		return st, fmt.Errorf("capture on %s: %w (capturing needs root or CAP_NET_RAW)", opt.Iface, err)
	}
	defer h.Close()
	// The handle's buffer is the interface MTU, which cuts every full-size
	// frame short by its Ethernet header: give it the snap length.
	if err := h.SetCaptureLength(snap); err != nil {
		return st, err
	}
	// A read blocks until a frame arrives; a receive timeout on the socket
	// lets the loop see ctx and the deadline on an idle interface. The
	// handle does not export its descriptor (gopacket v1.1.19).
	fd := int(reflect.ValueOf(h).Elem().FieldByName("fd").Int())
	tv := unix.NsecToTimeval((200 * time.Millisecond).Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return st, fmt.Errorf("capture on %s: %w", opt.Iface, err)
	}
	pw := pcapgo.NewWriter(w)
	if err := pw.WriteFileHeader(uint32(snap), layers.LinkTypeEthernet); err != nil {
		return st, err
	}
	if opt.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, opt.Duration)
		defer cancel()
	}
	next := time.Now().Add(time.Second)
	progress := func() {
		if opt.Progress != nil {
			opt.Progress(st.Packets, st.Bytes)
		}
	}
	progress() // the socket is bound: frames from now on are captured
	defer func() {
		if s, err := h.Stats(); err == nil {
			st.Dropped = int64(s.Drops)
		}
		progress()
	}()
	for ctx.Err() == nil && (opt.MaxPackets == 0 || st.Packets < opt.MaxPackets) {
		if time.Now().After(next) {
			progress()
			next = time.Now().Add(time.Second)
		}
		data, ci, err := h.ZeroCopyReadPacketData()
		if err != nil {
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) || isTimeout(err) {
				continue
			}
			return st, fmt.Errorf("capture on %s: %w", opt.Iface, err)
		}
		ci.AncillaryData = nil
		if err := pw.WritePacket(ci, data); err != nil {
			return st, err
		}
		st.Packets++
		st.Bytes += int64(ci.Length)
	}
	return st, nil
}

// isTimeout recognises the receive timeout: the handle wraps the errno in
// a string.
func isTimeout(err error) bool {
	s := err.Error()
	return strings.Contains(s, unix.EAGAIN.Error()) || strings.Contains(s, unix.EINTR.Error())
}
