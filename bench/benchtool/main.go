// Command benchtool holds the small loopback-only helpers of bench/run.sh:
// list generators, readiness probes, a fast HTTP server, an HTTPS server of
// zeros, a TCP sink and a pump that streams through a CONNECT proxy or
// straight to the sink. It refuses every address outside the loopback range.
package main

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	cmd, args := os.Args[1], os.Args[2:]
	var err error
	switch cmd {
	case "gen":
		err = gen(args)
	case "freeports":
		err = freePorts(args)
	case "waitport":
		err = waitPort(args)
	case "dnswait":
		err = dnsWait(args)
	case "httpserver":
		err = httpServer(args)
	case "tlsserver":
		err = tlsServer(args)
	case "sink":
		err = sink(args)
	case "pump":
		err = pump(args)
	case "connectproxy":
		err = connectProxy(args)
	case "decide":
		err = decide(args)
	case "keepalive":
		err = keepAlive(args)
	case "leafcheck":
		err = leafCheck(args)
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "benchtool %s: %v\n", cmd, err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: benchtool gen|freeports|waitport|dnswait|httpserver|tlsserver|sink|pump|connectproxy|decide|keepalive|leafcheck [flags]")
	os.Exit(2)
}

// loopback checks that addr (host:port) is on the loopback range.
func loopback(addr string) error {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return fmt.Errorf("%q: want a literal loopback ip:port: %v", addr, err)
	}
	if !ap.Addr().IsLoopback() {
		return fmt.Errorf("%s is not a loopback address; benchtool talks to loopback only", addr)
	}
	return nil
}

// name returns the i-th generated name, always under .test.
func name(i int) string { return fmt.Sprintf("host%d.block%d.test", i, i%1000) }

// gen writes n generated names in one of several formats.
func gen(args []string) error {
	fs := flag.NewFlagSet("gen", flag.ExitOnError)
	n := fs.Int("n", 1000, "how many names")
	format := fs.String("format", "plain", "plain, dnsmasq (address=/name/), dnsperf (name A, shuffled), allowed (dnsperf lines of cachedN.allowed.test)")
	out := fs.String("o", "", "output file (MANDATORY)")
	fs.Parse(args)
	if *out == "" {
		return errors.New("-o is mandatory")
	}
	f, err := os.Create(*out)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	for i := 0; i < *n; i++ {
		switch *format {
		case "plain":
			fmt.Fprintln(w, name(i))
		case "dnsmasq":
			fmt.Fprintf(w, "address=/%s/\n", name(i))
		case "dnsperf":
			// A fixed permutation (7919 is prime and does not divide n
			// for the sizes used) so that queries are not in load order.
			j := int((int64(i) * 7919) % int64(*n))
			fmt.Fprintf(w, "%s A\n", name(j))
		case "allowed":
			fmt.Fprintf(w, "cached%d.allowed.test A\n", i)
		default:
			return fmt.Errorf("unknown -format %q", *format)
		}
	}
	if err := w.Flush(); err != nil {
		return err
	}
	return f.Close()
}

// freePorts prints n distinct ports free for both TCP and UDP on
// 127.0.0.1, drawn at random from -min..-max: below the kernel's ephemeral
// range, so that no client socket (of this bench or anyone else) takes one
// between this check and the server's bind.
func freePorts(args []string) error {
	fs := flag.NewFlagSet("freeports", flag.ExitOnError)
	lo := fs.Int("min", 20000, "lowest port")
	hi := fs.Int("max", 32000, "highest port")
	fs.Parse(args)
	n := 1
	if fs.NArg() > 0 {
		var err error
		if n, err = strconv.Atoi(fs.Arg(0)); err != nil {
			return err
		}
	}
	if *lo < 1024 || *hi > 65535 || *hi-*lo < 10*n {
		return fmt.Errorf("bad port range %d-%d for %d ports", *lo, *hi, n)
	}
	var hold []io.Closer
	defer func() {
		for _, c := range hold {
			c.Close()
		}
	}()
	seen := map[int]bool{}
	var ports []string
	for tries := 0; len(ports) < n && tries < 1000*n; tries++ {
		p := *lo + mrand.IntN(*hi-*lo+1)
		if seen[p] {
			continue
		}
		seen[p] = true
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue
		}
		hold = append(hold, l)
		u, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue
		}
		hold = append(hold, u)
		ports = append(ports, strconv.Itoa(p))
	}
	if len(ports) < n {
		return errors.New("not enough free ports")
	}
	fmt.Println(strings.Join(ports, " "))
	return nil
}

// waitPort waits until a TCP connection to addr succeeds.
func waitPort(args []string) error {
	fs := flag.NewFlagSet("waitport", flag.ExitOnError)
	addr := fs.String("addr", "", "ip:port")
	timeout := fs.Duration("timeout", 10*time.Second, "give up after")
	fs.Parse(args)
	if err := loopback(*addr); err != nil {
		return err
	}
	end := time.Now().Add(*timeout)
	for time.Now().Before(end) {
		c, err := net.DialTimeout("tcp", *addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Errorf("%s not listening after %v", *addr, *timeout)
}

// dnsWait asks addr for name every few milliseconds until the answer has
// the wanted rcode, then prints the seconds since -since (unix ns).
func dnsWait(args []string) error {
	fs := flag.NewFlagSet("dnswait", flag.ExitOnError)
	addr := fs.String("addr", "", "ip:port")
	qname := fs.String("name", "", "name to ask (under .test)")
	rcode := fs.String("rcode", "NXDOMAIN", "wanted rcode")
	since := fs.Int64("since", 0, "start time, unix ns (default: now)")
	timeout := fs.Duration("timeout", 60*time.Second, "give up after")
	fs.Parse(args)
	if err := loopback(*addr); err != nil {
		return err
	}
	if !strings.HasSuffix(strings.TrimSuffix(*qname, "."), ".test") {
		return fmt.Errorf("%q is not under .test", *qname)
	}
	want, ok := dns.StringToRcode[strings.ToUpper(*rcode)]
	if !ok {
		return fmt.Errorf("unknown rcode %q", *rcode)
	}
	start := time.Now()
	if *since != 0 {
		start = time.Unix(0, *since)
	}
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(*qname), dns.TypeA)
	c := &dns.Client{Timeout: 50 * time.Millisecond}
	end := time.Now().Add(*timeout)
	var last string
	for time.Now().Before(end) {
		r, _, err := c.Exchange(m, *addr)
		switch {
		case err != nil:
			last = err.Error()
		case r.Rcode == want:
			fmt.Printf("%.3f\n", time.Since(start).Seconds())
			return nil
		default:
			last = dns.RcodeToString[r.Rcode]
		}
		time.Sleep(2 * time.Millisecond)
	}
	return fmt.Errorf("no %s for %s from %s after %v (last: %s)", *rcode, *qname, *addr, *timeout, last)
}

// httpServer answers every request with a short body, keep-alive.
func httpServer(args []string) error {
	fs := flag.NewFlagSet("httpserver", flag.ExitOnError)
	addr := fs.String("addr", "", "listen ip:port")
	fs.Parse(args)
	if err := loopback(*addr); err != nil {
		return err
	}
	body := []byte("hello from the bench\n")
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.Write(body)
	})
	return (&http.Server{Addr: *addr, Handler: h}).ListenAndServe()
}

// zeros writes n zero bytes to w in large writes.
func zeros(w io.Writer, n int64) error { return zerosChunk(w, n, 256<<10) }

// tlsServer serves GET /?bytes=N (default 1 GiB) of zeros over HTTPS with
// a fresh self-signed certificate for 127.0.0.1 (clients use -k).
func tlsServer(args []string) error {
	fs := flag.NewFlagSet("tlsserver", flag.ExitOnError)
	addr := fs.String("addr", "", "listen ip:port")
	names := fs.String("names", "", "comma-separated DNS names (under .test) the certificate also covers")
	certOut := fs.String("certout", "", "write the (self-signed) certificate as PEM to this file")
	fs.Parse(args)
	if err := loopback(*addr); err != nil {
		return err
	}
	var dnsNames []string
	for _, n := range strings.Split(*names, ",") {
		if n = strings.TrimSpace(n); n == "" {
			continue
		}
		if !strings.HasSuffix(n, ".test") {
			return fmt.Errorf("-names: %q is not under .test", n)
		}
		dnsNames = append(dnsNames, n)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "unicorn bench"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:     dnsNames,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	cert := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	if *certOut != "" {
		if err := os.WriteFile(*certOut, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
			return err
		}
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := int64(1 << 30)
		if s := r.URL.Query().Get("bytes"); s != "" {
			v, err := strconv.ParseInt(s, 10, 64)
			if err != nil || v < 0 {
				http.Error(w, "bad bytes", http.StatusBadRequest)
				return
			}
			n = v
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
		zeros(w, n)
	})
	srv := &http.Server{Addr: *addr, Handler: h, TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}},
		// HTTP/1.1 only: one TCP stream, no HTTP/2 flow control in the way.
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){}}
	return srv.ListenAndServeTLS("", "")
}

// sink reads, on every connection, an 8-byte big-endian length N and then
// N bytes (or up to the end), writes back the count it read (8 bytes) and
// closes. The length prefix lets pump finish through relays that do not
// pass a half-close on (tinyproxy).
func sink(args []string) error {
	return serveLoopback("sink", args, func(c net.Conn) {
		var b [8]byte
		if _, err := io.ReadFull(c, b[:]); err != nil {
			return
		}
		want := int64(binary.BigEndian.Uint64(b[:]))
		buf := make([]byte, 1<<20)
		var n int64
		for n < want {
			k, err := c.Read(buf[:min(int64(len(buf)), want-n)])
			n += int64(k)
			if err != nil {
				break
			}
		}
		binary.BigEndian.PutUint64(b[:], uint64(n))
		c.Write(b[:])
	})
}

// pump streams -bytes (after their 8-byte length) to the sink at -target,
// through a CONNECT tunnel of -proxy if given, waits for the sink's count
// and prints
// "bytes seconds gbit/s".
func pump(args []string) error {
	fs := flag.NewFlagSet("pump", flag.ExitOnError)
	target := fs.String("target", "", "sink ip:port")
	proxy := fs.String("proxy", "", "CONNECT proxy ip:port (default: direct)")
	total := fs.Int64("bytes", 1<<30, "bytes to send")
	chunk := fs.Int("chunk", 1<<20, "write size")
	fs.Parse(args)
	if err := loopback(*target); err != nil {
		return err
	}
	dial := *target
	if *proxy != "" {
		if err := loopback(*proxy); err != nil {
			return err
		}
		dial = *proxy
	}
	c, err := net.DialTimeout("tcp", dial, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	if *proxy != "" {
		fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", *target, *target)
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
		if err != nil {
			return fmt.Errorf("CONNECT: %v", err)
		}
		if resp.StatusCode != 200 {
			return fmt.Errorf("CONNECT: %s", resp.Status)
		}
		if br.Buffered() != 0 {
			return errors.New("CONNECT: bytes after the response head")
		}
	}
	c.SetDeadline(time.Now().Add(10 * time.Minute))
	start := time.Now()
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(*total))
	if _, err := c.Write(b[:]); err != nil {
		return err
	}
	if err := zerosChunk(c, *total, *chunk); err != nil {
		return err
	}
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return fmt.Errorf("reading the sink's count: %v", err)
	}
	secs := time.Since(start).Seconds()
	if got := int64(binary.BigEndian.Uint64(b[:])); got != *total {
		return fmt.Errorf("sink read %d of %d bytes", got, *total)
	}
	fmt.Printf("%d %.3f %.3f\n", *total, secs, float64(*total)*8/secs/1e9)
	return nil
}

// zerosChunk writes n zero bytes to w in writes of chunk bytes.
func zerosChunk(w io.Writer, n int64, chunk int) error {
	buf := make([]byte, chunk)
	for n > 0 {
		k := min(n, int64(len(buf)))
		if _, err := w.Write(buf[:k]); err != nil {
			return err
		}
		n -= k
	}
	return nil
}

// connectProxy is the reference relay: a minimal CONNECT proxy (loopback
// targets only) that relays with two plain io.Copy between *net.TCPConn,
// which Go turns into splice(2). It shows what any Go relay costs here.
func connectProxy(args []string) error {
	return serveLoopback("connectproxy", args, func(c net.Conn) {
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil || req.Method != http.MethodConnect || loopback(req.Host) != nil {
			io.WriteString(c, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
			return
		}
		up, err := net.Dial("tcp", req.Host)
		if err != nil {
			io.WriteString(c, "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
			return
		}
		defer up.Close()
		io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n")
		if n := br.Buffered(); n > 0 {
			b, _ := br.Peek(n)
			up.Write(b)
		}
		done := make(chan struct{})
		go func() {
			io.Copy(up, c)
			up.(*net.TCPConn).CloseWrite()
			close(done)
		}()
		io.Copy(c, up)
		c.(*net.TCPConn).CloseWrite()
		<-done
	})
}

// serveLoopback parses -addr from args, refuses a non-loopback address,
// and runs handle on each connection accepted there (closing it after).
func serveLoopback(name string, args []string, handle func(net.Conn)) error {
	fs := flag.NewFlagSet(name, flag.ExitOnError)
	addr := fs.String("addr", "", "listen ip:port")
	fs.Parse(args)
	if err := loopback(*addr); err != nil {
		return err
	}
	l, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	for {
		c, err := l.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			handle(c)
		}()
	}
}
