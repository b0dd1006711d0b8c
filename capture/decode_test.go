package capture_test

import (
	"bytes"
	"net/netip"
	"path/filepath"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/chaos-unicorn/unicorn/capture"
	"github.com/chaos-unicorn/unicorn/capture/capturetest"
)

// frames returns every frame of the test captures.
func frames(t testing.TB) [][]byte {
	var out [][]byte
	for name := range capturetest.Files {
		f, err := capture.Open(filepath.Join("testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		for {
			data, _, err := f.ZeroCopyReadPacketData()
			if err != nil {
				break
			}
			out = append(out, append([]byte(nil), data...))
		}
		f.Close()
	}
	return out
}

// dataFrame returns one Ethernet frame: a TCP segment with payload n bytes.
func dataFrame(t testing.TB, n int) []byte {
	var buf bytes.Buffer
	b, err := capturetest.NewPcap(&buf)
	if err != nil {
		t.Fatal(err)
	}
	c := netip.AddrPortFrom(capturetest.Phone, 41000)
	s := netip.AddrPortFrom(capturetest.Prices, 443)
	b.TCP(c, s, capturetest.PSH|capturetest.ACK, make([]byte, n))
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	src, err := capture.NewReader(&buf)
	if err != nil {
		t.Fatal(err)
	}
	data, _, err := src.ZeroCopyReadPacketData()
	if err != nil {
		t.Fatal(err)
	}
	return append([]byte(nil), data...)
}

// TestDecodeAllocs: a TCP data segment decodes and is accounted without
// allocating, once its flow is known.
func TestDecodeAllocs(t *testing.T) {
	frame := dataFrame(t, 1200)
	dec, err := capture.NewDecoder(layers.LinkTypeEthernet)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := capture.NewAnalyzer(capture.Options{})
	ci := gopacket.CaptureInfo{Timestamp: capturetest.Start, CaptureLength: len(frame), Length: len(frame)}
	p, err := dec.Decode(frame, ci)
	if err != nil || p.Proto != capture.ProtoTCP || len(p.Payload) != 1200 {
		t.Fatalf("decode: %v %+v", err, p)
	}
	a.Add(p, err)
	allocs := testing.AllocsPerRun(200, func() {
		p, err := dec.Decode(frame, ci)
		a.Add(p, err)
	})
	if allocs != 0 {
		t.Errorf("%.1f allocations per packet, want 0", allocs)
	}
}

// FuzzDecode: no frame makes the decoder or the analyzer panic, and a
// frame that decodes has addresses and ports consistent with its protocol.
func FuzzDecode(f *testing.F) {
	for _, fr := range frames(f) {
		f.Add(fr, true)
	}
	f.Add([]byte{0x45, 0, 0, 20}, false)
	f.Fuzz(func(t *testing.T, frame []byte, ether bool) {
		lt := layers.LinkTypeEthernet
		if !ether {
			lt = layers.LinkTypeRaw
		}
		dec, err := capture.NewDecoder(lt)
		if err != nil {
			t.Fatal(err)
		}
		a, _ := capture.NewAnalyzer(capture.Options{})
		ci := gopacket.CaptureInfo{Timestamp: capturetest.Start, CaptureLength: len(frame), Length: len(frame)}
		p, err := dec.Decode(frame, ci)
		a.Add(p, err)
		if err == nil && p.Proto != capture.ProtoAny && (!p.Src.IsValid() || !p.Dst.IsValid()) {
			t.Errorf("decoded %v without addresses", p.Proto)
		}
		a.Report()
	})
}

// FuzzReader: no file makes the reader or the report panic.
func FuzzReader(f *testing.F) {
	for name, gen := range capturetest.Files {
		var buf bytes.Buffer
		if err := gen(&buf); err != nil {
			f.Fatal(name, err)
		}
		f.Add(buf.Bytes())
	}
	f.Fuzz(func(t *testing.T, file []byte) {
		src, err := capture.NewReader(bytes.NewReader(file))
		if err != nil {
			return
		}
		a, _ := capture.NewAnalyzer(capture.Options{})
		if err := a.ReadFrom(src); err != nil {
			return
		}
		a.Report()
	})
}

func BenchmarkDecode(b *testing.B) {
	frame := dataFrame(b, 1200)
	dec, _ := capture.NewDecoder(layers.LinkTypeEthernet)
	a, _ := capture.NewAnalyzer(capture.Options{})
	ci := gopacket.CaptureInfo{Timestamp: capturetest.Start, CaptureLength: len(frame), Length: len(frame)}
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	for b.Loop() {
		p, err := dec.Decode(frame, ci)
		a.Add(p, err)
	}
}

func BenchmarkReport(b *testing.B) {
	var buf bytes.Buffer
	if err := capturetest.Bulk(&buf, 16<<20, 1); err != nil {
		b.Fatal(err)
	}
	eng := engine(b)
	b.SetBytes(int64(buf.Len()))
	b.ReportAllocs()
	for b.Loop() {
		src, err := capture.NewReader(bytes.NewReader(buf.Bytes()))
		if err != nil {
			b.Fatal(err)
		}
		a, _ := capture.NewAnalyzer(capture.Options{Engine: eng})
		if err := a.ReadFrom(src); err != nil {
			b.Fatal(err)
		}
		a.Report()
	}
}
