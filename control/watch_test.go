package control

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// TestWatchDebounces: a burst of writes (and an editor's save by rename)
// reloads once, after the burst; files the loader does not read do not
// reload at all.
func TestWatchDebounces(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "lab.yaml")
	os.WriteFile(file, []byte("scenario: a\n"), 0o644)
	ruleDir := filepath.Join(dir, "more")
	os.Mkdir(ruleDir, 0o755)

	var reloads atomic.Int32
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Watch(ctx, []string{file, ruleDir}, 200*time.Millisecond, slog.Default(), func() { reloads.Add(1) })
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	time.Sleep(100 * time.Millisecond) // let the watcher start

	wait := func(want int32) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for reloads.Load() < want && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		time.Sleep(400 * time.Millisecond) // and no more than want
		if got := reloads.Load(); got != want {
			t.Fatalf("%d reloads, want %d", got, want)
		}
	}
	for i := range 5 { // a burst of writes, 20 ms apart
		os.WriteFile(file, []byte("scenario: a\n# "+string(rune('0'+i))+"\n"), 0o644)
		time.Sleep(20 * time.Millisecond)
	}
	wait(1)
	// Save by rename, as many editors do.
	tmp := filepath.Join(dir, ".lab.yaml.swp")
	os.WriteFile(tmp, []byte("scenario: b\n"), 0o644)
	os.Rename(tmp, file)
	wait(2)
	// Not rule files: another file beside lab.yaml, a swap file in the rule directory.
	os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("x"), 0o644)
	os.WriteFile(filepath.Join(ruleDir, ".x.yaml.swp"), []byte("x"), 0o644)
	wait(2)
	// A rule file in the directory.
	os.WriteFile(filepath.Join(ruleDir, "extra.yml"), []byte("scenario: c\n"), 0o644)
	wait(3)
}
