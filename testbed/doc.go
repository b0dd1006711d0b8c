// Package testbed owns a fake internet for unicorn's tests and demos: a
// DNS upstream and fake services (Infura JSON-RPC, Etherscan REST, a plain
// site) on loopback, a test CA for their TLS, and the helpers that build the
// unicorn binary and run it against them. The whole-binary end-to-end tests
// live here too. Nothing in it sends a packet beyond 127.0.0.0/8 and ::1,
// and production code never imports it.
package testbed
