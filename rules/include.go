package rules

import (
	"bufio"
	"bytes"
	"net/netip"
)

// maxListErrors caps the errors reported for one included list, so that a
// wrong file (a binary, a CSV) gives a screenful and not a million lines.
const maxListErrors = 20

// include reads a domain list into svc. Each line is one of:
//
//	example.com                   a plain domain list
//	0.0.0.0 ads.example.com x.test  a hosts file (the names after the address)
//	||tracker.example^            an adblock-style domain rule ($options ignored)
//
// Blank lines and comments (#, !, [Adblock ...]) are skipped, as are adblock
// rules unicorn cannot express at the network level (exceptions @@,
// cosmetic ##, paths); the set counts them as skipped. Names are domains:
// they cover their subdomains.
func (ld *loader) include(d *fileDecoder, svc *Service, name string, at Pos, path string) {
	file := ld.join(ld.dir(d.file), name)
	f, err := ld.open(file)
	if err != nil {
		d.errs.add(at, path, "include %q: %s", file, friendlyOpenErr(err))
		return
	}
	defer f.Close()
	// The file's size bounds the bytes its names take: reserve it at once
	// rather than growing (and copying) the list a quarter at a time.
	if st, err := f.Stat(); err == nil && st.Size() > 0 {
		svc.domains.reserve(int(min(st.Size(), 1<<30)))
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	line, nerr := 0, 0
	report := func(col int, format string, args ...any) {
		nerr++
		if nerr <= maxListErrors {
			d.errs.add(Pos{File: file, Line: line, Col: col}, "", format, args...)
		}
	}
	for sc.Scan() {
		line++
		b := bytes.TrimSpace(sc.Bytes())
		if len(b) == 0 || b[0] == '#' || b[0] == '!' || b[0] == '[' {
			continue
		}
		col := bytes.Index(sc.Bytes(), b[:1]) + 1
		switch {
		case bytes.HasPrefix(b, []byte("||")):
			end := bytes.IndexAny(b, "^$")
			if end < 0 {
				end = len(b)
			}
			dom := b[2:end]
			if bytes.ContainsAny(dom, "/*") || (end < len(b) && b[end] == '$') {
				ld.skipped++ // a path or a wildcard, or options without ^
				continue
			}
			if err := svc.domains.addName(dom); err != nil {
				report(col+2, "%v", err)
			}
		case bytes.Contains(b, []byte("##")) || bytes.HasPrefix(b, []byte("@@")) || b[0] == '/' || b[0] == '|':
			ld.skipped++
		default:
			if i := bytes.IndexByte(b, '#'); i > 0 {
				b = bytes.TrimSpace(b[:i]) // trailing comment
			}
			first, rest := nextField(b)
			if len(rest) == 0 {
				if err := svc.domains.addName(first); err != nil {
					report(col, "%v", err)
				}
				continue
			}
			if _, err := netip.ParseAddr(string(first)); err != nil {
				report(col, "%q is neither a domain nor a hosts-file line (want example.com, 0.0.0.0 example.com or ||example.com^)", b)
				continue
			}
			for h, rest := nextField(rest); len(h) > 0; h, rest = nextField(rest) {
				if hostsBuiltin(h) {
					continue
				}
				if err := svc.domains.addName(h); err != nil {
					report(col, "%v", err)
				}
			}
		}
	}
	if err := sc.Err(); err != nil {
		d.errs.add(Pos{File: file, Line: line + 1}, "", "reading list: %v", err)
	}
	if nerr > maxListErrors {
		d.errs.add(Pos{File: file, Line: line}, "", "%d more errors in this list not shown", nerr-maxListErrors)
	}
}

// hostsBuiltin reports the names every hosts file maps to the machine
// itself; blocking them would break the device, not a service.
func hostsBuiltin(h []byte) bool {
	switch string(h) {
	case "localhost", "localhost.localdomain", "local", "broadcasthost",
		"ip6-localhost", "ip6-loopback", "ip6-localnet", "ip6-mcastprefix",
		"ip6-allnodes", "ip6-allrouters", "ip6-allhosts", "0.0.0.0":
		return true
	}
	return false
}

// nextField splits the first whitespace-separated field off b.
func nextField(b []byte) (field, rest []byte) {
	b = bytes.TrimLeft(b, " \t")
	i := bytes.IndexAny(b, " \t")
	if i < 0 {
		return b, nil
	}
	return b[:i], bytes.TrimLeft(b[i:], " \t")
}
