package testbed

// ScenarioNames are the names of the built-in scenarios' services that the
// fake internet knows, one or more per service: NewWorld's DNS maps each to
// 127.0.0.1. The Status cluster has no names: the app dials it by address.
var ScenarioNames = []string{
	// infura
	"mainnet.infura.io", "ropsten.infura.io", "rinkeby.infura.io", "ipfs.infura.io",
	// etherscan
	"api.etherscan.io", "api-ropsten.etherscan.io", "api-rinkeby.etherscan.io",
	// prices, swarm, sidechain-rpc
	"min-api.cryptocompare.com", "swarm-gateways.net", "dai.poa.network",
	// time and chaos-switch: allowed by cud-2019
	"0.pool.ntp.org", "1.pool.ntp.org", "cloudflare-dns.com",
	// a site no scenario touches
	"example.org",
}
