package router

import (
	"errors"
	"io"
)

// Guard is the crash guard's body, run in a process of its own (`unicorn
// router guard`) that `router up` starts with a pipe on its standard
// input: when the pipe closes, because the router process exited in any
// way (SIGKILL and panics included), it removes the table if it is still
// the one with id, restores forwarding, and returns. A table that another
// `router up` installed since is left alone.
func Guard(stdin io.Reader, id string, n NFT) (removed bool, err error) {
	io.Copy(io.Discard, stdin) // returns at EOF: the router process is gone
	meta, _, err := Installed(n)
	if errors.Is(err, ErrNoTable) {
		return false, nil // a clean exit removed it already
	}
	if err != nil || meta.ID != id {
		return false, err
	}
	if err := n.Delete(); err != nil && !errors.Is(err, ErrNoTable) {
		return false, err
	}
	return true, restoreForwarding(meta)
}
