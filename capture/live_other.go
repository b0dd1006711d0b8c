//go:build !linux

package capture

import (
	"context"
	"errors"
	"io"
)

// Live captures on an interface; it needs Linux AF_PACKET sockets.
func Live(ctx context.Context, w io.Writer, opt LiveOptions) (LiveStats, error) {
	return LiveStats{}, errors.New("capture: live capture needs Linux (AF_PACKET); capture with tcpdump -w and run unicorn report on the file")
}
