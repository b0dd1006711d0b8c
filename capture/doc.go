// Package capture owns what packet captures say about a rehearsal: it reads
// pcap and pcapng files (or a live interface through AF_PACKET) with pure-Go
// gopacket, attributes flows to names from the captured DNS answers, TLS SNI
// and HTTP Host headers, and reports per device and per service what the
// app tried (attempts, retries and their back-off, names resolved,
// fallbacks to other hosts, other resolvers, DoH/DoT, QUIC) and whether
// anything reached a destination the scenario blocks (leaks). It asks the
// rules Engine what the scenario does to each flow with Peek, and never
// matches rules itself.
//
// The decoding path (Reader, Decoder) allocates nothing per packet: one
// gopacket DecodingLayerParser with reused layers, and the DNS, TLS and HTTP
// parsers only on the packets that carry them. Malformed and truncated
// packets are counted, never fatal.
package capture
