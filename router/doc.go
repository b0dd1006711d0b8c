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
// Forwarded traffic crosses the rules once per flow, not once per packet:
// a flow the rules let through is marked in the bits GenMask of its
// conntrack mark with the ruleset's generation, and the forward chain's
// first rule accepts the packets of flows marked with the generation in
// force (one comparison instead of every rule). Every change of the rules
// or of the learned sets puts a new generation in force, so an open flow
// is decided again at its next packet: switching a scenario on cuts open
// UDP flows too. Only those bits are ours: the mark is set with a mask
// and its other bits, which other firewalls, VPN clients and policy
// routing use, stay as they were. The generation is a mark, not a flush
// of conntrack entries, because a flush would need netlink (see below),
// would also reset the NAT mappings of flows the change does not block, and
// would touch entries that are not unicorn's.
//
// The ruleset is nft script text applied with `nft -f -`, not netlink
// messages: one transaction per change (all or nothing), the very text
// `unicorn router up --dry-run` prints and `nft list table inet unicorn`
// shows, and no netlink library to trust with the firewall.
package router
