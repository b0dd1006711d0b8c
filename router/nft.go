package router

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"time"
)

// nftTimeout bounds every nft run.
const nftTimeout = 10 * time.Second

// NFT runs the nft command line tool.
type NFT struct {
	// Path is the nft binary. If empty, "nft" is looked up on PATH.
	Path string
}

// ErrNoTable is returned when unicorn's table is not installed.
var ErrNoTable = errors.New("no unicorn table is installed")

func (n NFT) path() string {
	if n.Path != "" {
		return n.Path
	}
	return "nft"
}

// Check reports why nft cannot be used here, or nil.
func (n NFT) Check() error {
	if _, err := exec.LookPath(n.path()); err != nil {
		return fmt.Errorf("nft (nftables) is not installed: apt-get install nftables, or your distribution's package (%w)", err)
	}
	return nil
}

// Apply runs script with `nft -f -`: one transaction, all of it or none.
func (n NFT) Apply(script string) error {
	_, err := n.run(script, "-f", "-")
	return err
}

// List returns `nft list table inet unicorn`, or ErrNoTable.
func (n NFT) List() (string, error) {
	out, err := n.run("", "list", "table", Family, Table)
	if err != nil && strings.Contains(err.Error(), "No such file or directory") {
		return "", ErrNoTable
	}
	return out, err
}

// Delete removes unicorn's table; ErrNoTable if there is none.
func (n NFT) Delete() error {
	_, err := n.run("", "delete", "table", Family, Table)
	if err != nil && strings.Contains(err.Error(), "No such file or directory") {
		return ErrNoTable
	}
	return err
}

func (n NFT) run(stdin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), nftTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, n.path(), args...)
	var out, errb bytes.Buffer
	cmd.Stdin = strings.NewReader(stdin)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(errb.String())
		if msg == "" {
			msg = err.Error()
		}
		return "", fmt.Errorf("nft %s: %s", strings.Join(args, " "), msg)
	}
	return out.String(), nil
}
