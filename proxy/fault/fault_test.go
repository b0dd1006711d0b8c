package fault

import (
	"context"
	"errors"
	"io"
	"net"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chaos-unicorn/unicorn/rules"
)

func dec(a rules.Action, p rules.Params) rules.Decision {
	return rules.Decision{Action: a, Rule: &rules.Rule{Action: a, Params: p}}
}

func TestRegistry(t *testing.T) {
	want := []string{"delay", "throttle", "cut", "slow_close", "stall"}
	if got := Names(); !slices.Equal(got, want) {
		t.Fatalf("Names() = %v, want %v", got, want)
	}
	for _, name := range want {
		a, _ := rules.ParseAction(name)
		if !a.ByteFault() {
			t.Errorf("%s is registered but not a byte fault", name)
		}
	}
	for _, c := range []struct {
		d    rules.Decision
		want bool
	}{
		{rules.Decision{}, false},
		{dec(rules.ActionReject, rules.Params{}), false},
		{dec(rules.ActionTLSReset, rules.Params{}), false},
		{dec(rules.ActionDelay, rules.Params{Latency: time.Second}), false}, // on connect: the front end's wait
		{dec(rules.ActionDelay, rules.Params{Latency: time.Second, DelayOn: rules.DelayOnChunk}), true},
		{dec(rules.ActionThrottle, rules.Params{Rate: 1000, Direction: rules.DirBoth}), true},
		{dec(rules.ActionCut, rules.Params{After: time.Second}), true},
		{dec(rules.ActionStall, rules.Params{}), true},
		{dec(rules.ActionSlowClose, rules.Params{Latency: time.Second}), true},
	} {
		if got := For(c.d, Env{}) != nil; got != c.want {
			t.Errorf("For(%v) != nil is %v, want %v", c.d, got, c.want)
		}
	}
}

// TestBudgetBothWays: two directions counted together never let more
// than the budget through, however their reads interleave.
func TestBudgetBothWays(t *testing.T) {
	b := newBudget(rules.DirBoth, 100000)
	var wg sync.WaitGroup
	var mu sync.Mutex
	total := 0
	for _, dir := range []rules.Direction{rules.DirUp, rules.DirDown} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				k := b.take(dir, 777)
				if k == 0 {
					return
				}
				n := k - k/3 // a short read: the rest of the reservation returns
				b.settle(dir, n)
				mu.Lock()
				total += n
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if total != 100000 {
		t.Fatalf("%d bytes passed, want exactly 100000", total)
	}
}

// TestWaitsAreCancellable: every fault that waits returns at once when its
// context ends.
func TestWaitsAreCancellable(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	hour := time.Hour
	start := time.Now()
	if err := For(dec(rules.ActionDelay, rules.Params{Latency: hour, DelayOn: rules.DelayOnChunk, Direction: rules.DirBoth}), Env{}).Pass(ctx, rules.DirDown, 1); !errors.Is(err, context.Canceled) {
		t.Errorf("delay: %v", err)
	}
	thr := For(dec(rules.ActionThrottle, rules.Params{Rate: 1, Direction: rules.DirBoth}), Env{})
	thr.Pass(ctx, rules.DirUp, 1)
	if err := thr.Pass(ctx, rules.DirUp, 1000); !errors.Is(err, context.Canceled) {
		t.Errorf("throttle: %v", err)
	}
	if _, err := For(dec(rules.ActionStall, rules.Params{Direction: rules.DirBoth}), Env{Hold: hour}).Limit(ctx, rules.DirDown, 10); !errors.Is(err, context.Canceled) {
		t.Errorf("stall: %v", err)
	}
	sc := For(dec(rules.ActionSlowClose, rules.Params{Latency: hour, Direction: rules.DirBoth}), Env{})
	if err := sc.(Ender).End(ctx, rules.DirDown); !errors.Is(err, context.Canceled) {
		t.Errorf("slow_close: %v", err)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("cancelled waits took %v", took)
	}
}

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (net.Conn, net.Conn) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	a, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

func cpuTime(t *testing.T) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Skip("no getrusage:", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestThrottleDoesNotSpin reads 512 KiB through a throttle of 512 KiB/s:
// about a second of wall time, and a small part of it on the CPU.
func TestThrottleDoesNotSpin(t *testing.T) {
	const size, rate = 512 << 10, 512 << 10
	up, far := tcpPair(t)
	go func() {
		far.Write(make([]byte, size))
		far.Close()
	}()
	c := Wrap(context.Background(), up, For(dec(rules.ActionThrottle, rules.Params{Rate: rate, Direction: rules.DirDown}), Env{}), func(error) {})
	cpu0, start := cpuTime(t), time.Now()
	n, err := io.Copy(io.Discard, c)
	wall, cpu := time.Since(start), cpuTime(t)-cpu0
	if err != nil || n != size {
		t.Fatalf("read %d bytes, %v", n, err)
	}
	t.Logf("512 KiB at 512 KiB/s: %v wall, %v CPU (%.1f%%)", wall, cpu, 100*cpu.Seconds()/wall.Seconds())
	if wall < 900*time.Millisecond || wall > 1300*time.Millisecond {
		t.Errorf("took %v, want about 1s", wall)
	}
	if cpu > wall/5 {
		t.Errorf("used %v CPU in %v: spinning", cpu, wall)
	}
}

// TestCutAbortsWithReset: a cut in mode rst reports ErrReset to abort
// once the budget is spent, after exactly the budget has passed.
func TestCutAbortsWithReset(t *testing.T) {
	up, far := tcpPair(t)
	go func() { far.Write(make([]byte, 64<<10)) }()
	var got error
	c := Wrap(context.Background(), up, For(dec(rules.ActionCut, rules.Params{AfterBytes: 5000, Direction: rules.DirDown, Close: rules.CloseRST}), Env{}), func(err error) { got = err })
	n, err := io.Copy(io.Discard, c)
	if n != 5000 || !errors.Is(err, ErrReset) || !errors.Is(got, ErrReset) {
		t.Fatalf("read %d bytes, err %v, abort %v; want 5000, ErrReset", n, err, got)
	}
}
