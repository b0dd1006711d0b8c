package capture

import (
	"fmt"
	"net"
	"strings"
	"time"
)

// CheckInterface returns an error naming the interfaces there are when
// there is no interface called name.
func CheckInterface(name string) error {
	if _, err := net.InterfaceByName(name); err == nil {
		return nil
	}
	var names []string
	if ifs, err := net.Interfaces(); err == nil {
		for _, i := range ifs {
			names = append(names, i.Name)
		}
	}
	return fmt.Errorf("capture: no interface %q (this machine has: %s)", name, strings.Join(names, ", "))
}

// LiveOptions configure Live.
type LiveOptions struct {
	// Iface is the interface to capture on. MANDATORY.
	Iface string
	// Duration stops the capture after this long. OPTIONAL: 0 runs until
	// the context is done.
	Duration time.Duration
	// MaxPackets stops the capture after this many packets. OPTIONAL: 0 is
	// no limit.
	MaxPackets int64
	// Progress is called about once a second, and once at the end, with
	// the packets and bytes captured so far. OPTIONAL.
	Progress func(packets, bytes int64)
	// Snaplen is the most bytes kept of each frame. OPTIONAL: 0 means 65535.
	Snaplen int
}

// LiveStats is what a live capture wrote.
type LiveStats struct {
	Packets, Bytes int64
	// Dropped counts frames the kernel dropped because the reader was slow.
	Dropped int64
}
