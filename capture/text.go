package capture

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// WriteJSON writes the report as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteText writes the report as tables for a terminal.
func (r *Report) WriteText(w io.Writer) error {
	ew := &errWriter{w: w}
	st := r.Stats
	name := r.File
	if name == "" {
		name = "capture"
	}
	fmt.Fprintf(ew, "%s: %d packets, %s, %s", name, st.Packets, sizeString(st.Bytes), st.Last.Sub(st.First).Round(time.Millisecond))
	if !st.First.IsZero() {
		fmt.Fprintf(ew, " from %s", st.First.UTC().Format(time.RFC3339))
	}
	fmt.Fprintln(ew)
	if st.Malformed+st.Truncated+st.NotIP+st.Untracked > 0 || st.FileError != "" {
		fmt.Fprintf(ew, "  malformed %d, truncated %d, not IP %d, untracked %d", st.Malformed, st.Truncated, st.NotIP, st.Untracked)
		if st.FileError != "" {
			fmt.Fprintf(ew, "; reading stopped: %s", st.FileError)
		}
		fmt.Fprintln(ew)
	}
	sc := strings.Join(r.Scenarios, ", ")
	if sc == "" {
		sc = "none (no verdicts)"
	}
	fmt.Fprintf(ew, "scenario: %s; capture taken on the %s side\n", sc, r.Side)
	switch {
	case len(r.Scenarios) == 0:
	case len(r.Leaks) == 0:
		fmt.Fprintln(ew, "leaks: none")
	default:
		fmt.Fprintf(ew, "LEAKS: %d (%d packets)\n", r.LeakCount(), r.LeakPackets)
		tw := tabwriter.NewWriter(ew, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  T\tDEVICE\tTARGET\tDEST\tNAME\tRULE\tWHY")
		for _, l := range r.Leaks {
			fmt.Fprintf(tw, "  %.3fs\t%s\t%s\t%s\t%s\t%s\t%s\n", l.T, l.Device, l.Target, l.Dest, dash(l.Name), l.Rule, l.Reason)
		}
		tw.Flush()
	}
	for _, d := range r.Devices {
		fmt.Fprintf(ew, "\ndevice %s", d.Addr)
		if d.Leaks > 0 {
			fmt.Fprintf(ew, " (%d leaks)", d.Leaks)
		}
		fmt.Fprintln(ew)
		tw := tabwriter.NewWriter(ew, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  TARGET\tVERDICT\tATTEMPTS\tTCP/UDP/DNS\tRETRIES\tOK/REFUSED/NO-ANSWER\tBACK-OFF\tLEAKS\tNAMES")
		for _, g := range d.Services {
			fmt.Fprintf(tw, "  %s\t%s\t%d\t%d/%d/%d\t%d\t%d/%d/%d\t%s\t%d\t%s\n",
				g.Target, g.Verdict, g.Attempts, g.TCP, g.UDP, g.DNS, g.Retries,
				g.Connected, g.Refused, g.Unanswered, backoffString(g.Backoff), g.Leaks, namesString(g.Names))
		}
		tw.Flush()
		for _, g := range d.Services {
			if len(g.Fallbacks) > 0 {
				fmt.Fprintf(ew, "  fallbacks (%s): %s\n", g.Target, strings.Join(g.Fallbacks, ", "))
			}
		}
		if len(d.Resolvers) > 0 {
			var parts []string
			for _, rs := range d.Resolvers {
				kind := "expected"
				if !rs.Expected {
					kind = "HARD-CODED"
				}
				parts = append(parts, fmt.Sprintf("%s (%d queries, %s)", rs.Addr, rs.Queries, kind))
			}
			fmt.Fprintf(ew, "  resolvers: %s\n", strings.Join(parts, "; "))
		}
		for _, e := range []struct {
			label string
			list  []Endpoint
		}{{"DNS over TLS", d.DoT}, {"DNS over HTTPS", d.DoH}, {"QUIC", d.QUIC}} {
			if len(e.list) == 0 {
				continue
			}
			var parts []string
			for _, p := range e.list {
				s := p.Dest
				if p.Name != "" {
					s += " " + p.Name
				}
				parts = append(parts, fmt.Sprintf("%s (%d flows)", s, p.Flows))
			}
			fmt.Fprintf(ew, "  %s: %s\n", e.label, strings.Join(parts, "; "))
		}
	}
	return ew.err
}

// LeakCount is the number of leaks, including those past the list's bound.
func (r *Report) LeakCount() int {
	n := 0
	for _, d := range r.Devices {
		n += d.Leaks
	}
	return n
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func backoffString(ds []Duration) string {
	if len(ds) == 0 {
		return "-"
	}
	var parts []string
	for i, d := range ds {
		if i == 6 {
			parts = append(parts, fmt.Sprintf("... (%d)", len(ds)))
			break
		}
		parts = append(parts, d.String())
	}
	return strings.Join(parts, " ")
}

func namesString(ns []Name) string {
	if len(ns) == 0 {
		return "-"
	}
	var parts []string
	for i, n := range ns {
		if i == 3 {
			parts = append(parts, fmt.Sprintf("+%d more", len(ns)-3))
			break
		}
		s := n.Name + " " + n.RCode
		if len(n.Addrs) > 0 {
			s += " " + strings.Join(n.Addrs, ",")
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, "; ")
}

func sizeString(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d bytes", n)
}

type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) Write(p []byte) (int, error) {
	if e.err != nil {
		return len(p), nil
	}
	_, e.err = e.w.Write(p)
	return len(p), nil
}
