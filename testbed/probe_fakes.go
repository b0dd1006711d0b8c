package testbed

import (
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// FakesOptions configure StartFakes.
type FakesOptions struct {
	// NodePort is the port of the Status nodes, TCP and UDP. OPTIONAL: 0
	// tries the fleet's 30303 and falls back to a free port.
	NodePort int
}

// Listener is one socket of the fake internet, for the table `unicorn
// testbed up` prints.
type Listener struct {
	Service string `json:"service"`
	Proto   string `json:"proto"` // "udp+tcp", "http", "tcp+udp"
	Addr    string `json:"addr"`
	What    string `json:"what"`
}

// Fakes is the fake internet on loopback that `unicorn testbed up` runs
// for demos: a resolver mapping ScenarioNames to 127.0.0.1, fake Infura
// (JSON-RPC and WebSocket), Etherscan, the price API and example.org over
// HTTP on 127.0.0.1, a Status bootnode on 127.0.0.2 and the community node
// on 127.0.0.3.
type Fakes struct {
	// DNS is the resolver's "127.0.0.1:port" (UDP and TCP).
	DNS string `json:"dns"`
	// Targets are what the probe tries, by the names the app uses.
	Targets []ProbeTarget `json:"targets"`
	// Listeners says what runs where.
	Listeners []Listener `json:"listeners"`

	closers []func()
}

// StartFakes starts the fake internet. Close stops it.
func StartFakes(opt FakesOptions) (f *Fakes, err error) {
	f = &Fakes{}
	defer func() {
		if err != nil {
			f.Close()
		}
	}()
	d := NewDNS()
	for _, n := range ScenarioNames {
		d.Map(n, loopback)
	}
	if f.DNS, err = f.startDNS(d); err != nil {
		return nil, err
	}
	f.Listeners = append(f.Listeners, Listener{"resolver", "udp+tcp", f.DNS, "maps the scenarios' names to 127.0.0.1, NXDOMAIN for the rest"})
	httpFakes := []struct {
		service, name, path string
		kind                ProbeKind
		h                   http.Handler
		what                string
	}{
		{"infura", "mainnet.infura.io", "/v3/testbed", ProbeJSONRPC, Infura(), "JSON-RPC (eth_blockNumber, eth_getBalance, eth_call, eth_sendRawTransaction, batches; WebSocket newHeads)"},
		{"etherscan", "api.etherscan.io", "/api?module=account&action=txlist&address=0x01", ProbeHTTP, Etherscan(), "account txlist API"},
		{"prices", "min-api.cryptocompare.com", "/data/price?fsym=ETH&tsyms=USD", ProbeHTTP, Prices(), "price API"},
		{"example", "example.org", "/", ProbeHTTP, Site(SiteBody), "a site no scenario touches"},
	}
	for _, h := range httpFakes {
		addr, err := f.startHTTP("127.0.0.1:0", h.h)
		if err != nil {
			return nil, err
		}
		_, port, _ := net.SplitHostPort(addr)
		url := "http://" + net.JoinHostPort(h.name, port) + h.path
		f.Listeners = append(f.Listeners, Listener{h.service, "http", addr, h.what + ": " + url})
		f.Targets = append(f.Targets, ProbeTarget{Service: h.service, Kind: h.kind, URL: url})
	}
	for _, n := range []struct{ service, name, ip, what string }{
		{"status-cluster", "boot-1", "127.0.0.2", "Status bootnode and mailserver (HELLO/WELCOME over TCP, PING/PONG over UDP)"},
		{"community", CommunityName, "127.0.0.3", "community node: must stay reachable"},
	} {
		node, err := startNodePreferring(n.name, n.ip, opt.NodePort)
		if err != nil {
			return nil, err
		}
		f.closers = append(f.closers, func() { node.Close() })
		f.Listeners = append(f.Listeners, Listener{n.service, "tcp+udp", node.Addr.String(), n.what})
		f.Targets = append(f.Targets, ProbeTarget{Service: n.service, Kind: ProbeNode, Addr: node.Addr.String(), UDP: true})
	}
	return f, nil
}

// startNodePreferring starts a node on port, or the fleet's port, or any.
func startNodePreferring(name, ip string, port int) (*Node, error) {
	if port != 0 {
		return StartNode(name, ip, port)
	}
	if n, err := StartNode(name, ip, NodePort); err == nil {
		return n, nil
	}
	return StartNode(name, ip, 0)
}

// Close stops every fake; it may be called twice.
func (f *Fakes) Close() {
	for i := len(f.closers) - 1; i >= 0; i-- {
		f.closers[i]()
	}
	f.closers = nil
}

func (f *Fakes) startDNS(d *DNS) (string, error) {
	var pc net.PacketConn
	var l net.Listener
	for range maxPortTries {
		var err error
		if pc, err = net.ListenPacket("udp", "127.0.0.1:0"); err != nil {
			return "", err
		}
		if l, err = net.Listen("tcp", pc.LocalAddr().String()); err == nil {
			break
		}
		pc.Close()
		pc = nil
	}
	if pc == nil {
		return "", errors.New("testbed: DNS: no port free for both UDP and TCP")
	}
	mux := dns.NewServeMux()
	mux.HandleFunc(".", d.serve)
	servers := []*dns.Server{{PacketConn: pc, Handler: mux}, {Listener: l, Handler: mux}}
	var started, done sync.WaitGroup
	for _, srv := range servers {
		started.Add(1)
		done.Add(1)
		srv.NotifyStartedFunc = started.Done
		go func() { defer done.Done(); srv.ActivateAndServe() }()
	}
	started.Wait()
	f.closers = append(f.closers, func() {
		for _, srv := range servers {
			srv.Shutdown()
		}
		done.Wait()
	})
	return pc.LocalAddr().String(), nil
}

func (f *Fakes) startHTTP(addr string, h http.Handler) (string, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("testbed: %w", err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ErrorLog: log.New(io.Discard, "", 0)}
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(l) }()
	f.closers = append(f.closers, func() { srv.Close(); <-done })
	return l.Addr().String(), nil
}
