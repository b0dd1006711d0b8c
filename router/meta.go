package router

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Meta is what the table's comment records about the installation, so
// that `router down`, `status` and the crash guard, which are other
// processes, know whose table it is and what to restore.
type Meta struct {
	ID      string    // random, per `router up`
	PID     int       // the process that installed it
	LAN     string    // the LAN interface
	Expires time.Time // when it reverts unless renewed
	// Forwarding holds the forwarding sysctls as they were before, to
	// restore: "1" or "0" each; "" if unknown.
	IPv4Forward, IPv6Forward string
}

const metaPrefix = "unicorn router mode:"

// String is the comment: "unicorn router mode: id=... pid=... ...".
func (m Meta) String() string {
	return fmt.Sprintf("%s id=%s pid=%d lan=%s expires=%s ip_forward=%s ipv6_forwarding=%s",
		metaPrefix, m.ID, m.PID, m.LAN, m.Expires.UTC().Format(time.RFC3339), m.IPv4Forward, m.IPv6Forward)
}

var commentRE = regexp.MustCompile(`(?m)^\s*comment "(` + regexp.QuoteMeta(metaPrefix) + `[^"]*)"`)

// ParseMeta reads the Meta from a listing of the table (`nft list table`).
func ParseMeta(listing string) (Meta, error) {
	m := commentRE.FindStringSubmatch(listing)
	if m == nil {
		return Meta{}, fmt.Errorf("the unicorn table has no %q comment: it was not installed by `unicorn router up`", metaPrefix)
	}
	var meta Meta
	for _, f := range strings.Fields(strings.TrimPrefix(m[1], metaPrefix)) {
		k, v, _ := strings.Cut(f, "=")
		switch k {
		case "id":
			meta.ID = v
		case "pid":
			meta.PID, _ = strconv.Atoi(v)
		case "lan":
			meta.LAN = v
		case "expires":
			meta.Expires, _ = time.Parse(time.RFC3339, v)
		case "ip_forward":
			meta.IPv4Forward = v
		case "ipv6_forwarding":
			meta.IPv6Forward = v
		}
	}
	return meta, nil
}

// The forwarding switches router mode turns on, and restores.
const (
	ipv4Forward = "net/ipv4/ip_forward"
	ipv6Forward = "net/ipv6/conf/all/forwarding"
)

// sysctlDir is where sysctls live.
const sysctlDir = "/proc/sys"

func readSysctl(name string) (string, error) {
	b, err := os.ReadFile(filepath.Join(sysctlDir, name))
	return strings.TrimSpace(string(b)), err
}

func writeSysctl(name, v string) error {
	return os.WriteFile(filepath.Join(sysctlDir, name), []byte(v+"\n"), 0o644)
}

// restoreForwarding puts the forwarding switches back as m recorded them.
func restoreForwarding(m Meta) error {
	var errs []string
	for _, s := range []struct{ name, v string }{{ipv4Forward, m.IPv4Forward}, {ipv6Forward, m.IPv6Forward}} {
		if s.v != "0" && s.v != "1" {
			continue
		}
		if err := writeSysctl(s.name, s.v); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("restoring forwarding: %s", strings.Join(errs, "; "))
	}
	return nil
}

// Down removes unicorn's table, whoever installed it, and restores the
// forwarding switches its comment recorded. It returns the Meta of the
// table it removed (PID says which process ran it), or ErrNoTable.
func Down(n NFT) (Meta, error) {
	listing, err := n.List()
	if err != nil {
		return Meta{}, err
	}
	meta, merr := ParseMeta(listing)
	if err := n.Delete(); err != nil {
		return meta, err
	}
	if merr != nil {
		return meta, nil
	}
	return meta, restoreForwarding(meta)
}

// Installed returns the Meta of the table in place, or ErrNoTable.
func Installed(n NFT) (Meta, string, error) {
	listing, err := n.List()
	if err != nil {
		return Meta{}, "", err
	}
	m, err := ParseMeta(listing)
	return m, listing, err
}
