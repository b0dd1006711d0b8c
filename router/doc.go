// Package router owns the firewall side of router mode (Linux): one
// nftables table, `inet unicorn`, that makes the machine the LAN's
// gateway (forwarding and NAT), redirects the LAN's TCP to unicorn's
// transparent listener and all its DNS (UDP and TCP port 53, whatever
// resolver a device was configured with) to unicorn's DNS, and rejects or
// drops the UDP and other IP traffic the active rules block. The rules
// become nft rules in the engine's order, first match wins, with sets of
// addresses learned from DNS answers for the rules' names kept in sync as
// answers arrive. It restores what it changed: `down`, process exit, a
// crash guard process and a time limit remove exactly that table and
// nothing else.
//
// The ruleset is nft script text applied with `nft -f -`, not netlink
// messages: one transaction per change (all or nothing), the very text
// `unicorn router up --dry-run` prints and `nft list table inet unicorn`
// shows, and no netlink library to trust with the firewall.
package router
