package testbed

import "testing"

// CommunityName is the name of the community node: a node run by someone
// other than Status, which the app can fall back to and which every
// built-in scenario must leave reachable (it is in no service of theirs).
const CommunityName = "community"

// ServeCommunity starts the community node for a test on ip (a port free
// for TCP and UDP) and stops it when tb ends. Scenarios that cut the
// Status cluster must not cut it: the end-to-end tests probe it and expect
// it to work.
func ServeCommunity(tb testing.TB, ip string) *Node {
	tb.Helper()
	return ServeNode(tb, CommunityName, ip)
}
