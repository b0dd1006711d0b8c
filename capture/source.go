package capture

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
)

// Source is a stream of captured frames: a pcap or pcapng file, or a live
// interface. The data returned by ZeroCopyReadPacketData is valid until the
// next call.
type Source interface {
	ZeroCopyReadPacketData() ([]byte, gopacket.CaptureInfo, error)
	LinkType() layers.LinkType
}

// pcapngMagic is the block type of a pcapng Section Header Block.
var pcapngMagic = []byte{0x0a, 0x0d, 0x0d, 0x0a}

// NewReader returns a Source reading a pcap (optionally gzipped) or pcapng
// stream from r, detected by its first bytes.
func NewReader(r io.Reader) (Source, error) {
	br := bufio.NewReaderSize(r, 1<<20)
	magic, err := br.Peek(4)
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("empty or short file: not a pcap or pcapng capture")
		}
		return nil, err
	}
	if string(magic) == string(pcapngMagic) {
		ng, err := pcapgo.NewNgReader(br, pcapgo.DefaultNgReaderOptions)
		if err != nil {
			return nil, fmt.Errorf("pcapng: %w", err)
		}
		for i := 0; i < ng.NInterfaces(); i++ {
			// The reader sizes its buffer by the interface's snap length.
			if ifc, err := ng.Interface(i); err == nil && ifc.SnapLength > maxSnaplen {
				return nil, fmt.Errorf("pcapng: interface %d has a snap length of %d bytes (at most %d expected): not a capture unicorn reads", i, ifc.SnapLength, maxSnaplen)
			}
		}
		return ng, nil
	}
	pr, err := pcapgo.NewReader(br)
	if err != nil {
		return nil, fmt.Errorf("not a pcap or pcapng capture (%w)", err)
	}
	if pr.Snaplen() > maxSnaplen {
		// The reader sizes its buffer by the snap length in the file
		// header; no real capture keeps more than 256 KiB of a frame, and a
		// frame longer than this ends the reading with an error.
		pr.SetSnaplen(maxSnaplen)
	}
	return pr, nil
}

// maxSnaplen is the largest frame kept (libpcap's MAXIMUM_SNAPLEN).
const maxSnaplen = 262144

// File is a capture file opened for reading.
type File struct {
	Source
	f *os.File
}

// Open opens a pcap or pcapng file.
func Open(path string) (*File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	src, err := NewReader(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &File{Source: src, f: f}, nil
}

// Close closes the file.
func (f *File) Close() error { return f.f.Close() }
