package control

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/fsnotify/fsnotify"
)

// DefaultDebounce is how long Watch waits after the last change before it
// reloads: editors write a file in bursts (truncate, write, rename, chmod).
const DefaultDebounce = 300 * time.Millisecond

// Watch calls reload once each time the rule files at paths (files, or
// directories of them) change, debounced by quiet: reload runs when no
// change came for quiet after the last. It watches each file's directory,
// so files that editors replace by renaming are still seen; in a watched
// directory only .yaml and .yml files count. Files a rule file includes
// are not watched (SIGHUP reloads them). It returns
// when ctx is done, or an error when nothing can be watched.
func Watch(ctx context.Context, paths []string, quiet time.Duration, log *slog.Logger, reload func()) error {
	if quiet <= 0 {
		quiet = DefaultDebounce
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watching the rule files: %w", err)
	}
	defer w.Close()
	// relevant reports whether a changed path is one of the rule files (or
	// in a watched rule directory).
	files, dirs := map[string]bool{}, map[string]bool{}
	for _, p := range paths {
		abs, err := filepath.Abs(p)
		if err != nil {
			return err
		}
		st, err := os.Stat(abs)
		switch {
		case err == nil && st.IsDir():
			dirs[abs] = true
		default:
			files[abs] = true
			abs = filepath.Dir(abs)
		}
		if err := w.Add(abs); err != nil {
			return fmt.Errorf("watching %s: %w", abs, err)
		}
	}
	relevant := func(name string) bool {
		abs, err := filepath.Abs(name)
		if err != nil {
			return false
		}
		if files[abs] {
			return true
		}
		// In a rule directory, only what the loader reads: not an
		// editor's swap or backup file.
		ext := filepath.Ext(abs)
		return dirs[filepath.Dir(abs)] && (ext == ".yaml" || ext == ".yml")
	}
	t := time.NewTimer(quiet)
	t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return errors.New("rule file watcher closed")
			}
			if ev.Op == fsnotify.Chmod || !relevant(ev.Name) {
				continue
			}
			t.Reset(quiet)
		case err, ok := <-w.Errors:
			if !ok {
				return errors.New("rule file watcher closed")
			}
			log.Warn("rule file watcher", slog.Any("err", err))
		case <-t.C:
			reload()
		}
	}
}

func itoa(i int) string { return strconv.Itoa(i) }
