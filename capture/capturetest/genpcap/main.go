// Command genpcap writes the test captures of capture/testdata, or a large
// capture for the benchmark:
//
//	go run ./capture/capturetest/genpcap -dir capture/testdata
//	go run ./capture/capturetest/genpcap -bulk 1GB -o /tmp/bulk.pcap
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/chaos-unicorn/unicorn/capture/capturetest"
)

func main() {
	dir := flag.String("dir", "", "write the test captures into `DIR`")
	bulk := flag.String("bulk", "", "write a capture of about `SIZE` (e.g. 64MB, 1GB) of ordinary traffic to -o")
	out := flag.String("o", "", "output `FILE` for -bulk")
	seed := flag.Uint64("seed", 1, "random seed for -bulk")
	flag.Parse()
	if err := run(*dir, *bulk, *out, *seed); err != nil {
		fmt.Fprintln(os.Stderr, "genpcap:", err)
		os.Exit(1)
	}
}

func run(dir, bulk, out string, seed uint64) error {
	switch {
	case dir != "":
		for name, fn := range capturetest.Files {
			if err := write(filepath.Join(dir, name), fn); err != nil {
				return err
			}
		}
		return nil
	case bulk != "" && out != "":
		size, err := parseSize(bulk)
		if err != nil {
			return err
		}
		return write(out, func(w io.Writer) error { return capturetest.Bulk(w, size, seed) })
	}
	return fmt.Errorf("give -dir DIR, or -bulk SIZE -o FILE")
}

func write(path string, fn func(io.Writer) error) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := fn(f); err != nil {
		f.Close()
		return fmt.Errorf("%s: %w", path, err)
	}
	return f.Close()
}

func parseSize(s string) (int64, error) {
	u := strings.ToUpper(strings.TrimSpace(s))
	mult := int64(1)
	for _, x := range []struct {
		suf string
		m   int64
	}{{"GB", 1 << 30}, {"MB", 1 << 20}, {"KB", 1 << 10}, {"B", 1}} {
		if strings.HasSuffix(u, x.suf) {
			u, mult = strings.TrimSuffix(u, x.suf), x.m
			break
		}
	}
	n, err := strconv.ParseInt(u, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("%q is not a size (want e.g. 64MB, 1GB)", s)
	}
	return n * mult, nil
}
