package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/chaos-unicorn/unicorn/control"
	"github.com/chaos-unicorn/unicorn/rules"
	"github.com/urfave/cli/v2"
)

// reloadOnHangup reloads the rules (the same --rules paths) into e each
// time the process gets SIGHUP and, with --watch, each time a rule file
// changes, until ctx is done. A reload keeps every scenario's switch (on,
// off, device scope) by name. A reload that fails logs every error,
// records them in reloads (the API and the dashboard show them) and leaves
// the rules in force as they were.
func reloadOnHangup(ctx context.Context, c *cli.Context, e *rules.Engine, reloads *control.Reloads, log *slog.Logger) {
	var mu sync.Mutex // one reload at a time, whatever asked for it
	do := func(trigger string) {
		mu.Lock()
		defer mu.Unlock()
		reload(c, e, reloads, log, trigger)
	}
	if paths := c.StringSlice("rules"); len(paths) > 0 && c.Bool("watch") {
		go func() {
			err := control.Watch(ctx, paths, control.DefaultDebounce, log, func() { do("file change") })
			if err != nil {
				log.Warn("rule files are not watched; SIGHUP still reloads them", "err", err)
			}
		}()
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			do("SIGHUP")
		}
	}
}

func reload(c *cli.Context, e *rules.Engine, reloads *control.Reloads, log *slog.Logger, trigger string) {
	set, _, err := loadRules(c)
	if err == nil {
		err = e.Reload(set)
	}
	reloads.Record(time.Now(), trigger, err)
	if err != nil {
		for _, re := range rules.Errors(err) {
			log.Error("rule error", slog.String("at", re.Pos.String()), slog.String("field", re.Path), slog.String("error", re.Error()))
		}
		log.Error("reload failed; the rules in force are unchanged", "trigger", trigger, "scenarios", activeNames(e), "err", err)
		return
	}
	log.Info("rules reloaded", "trigger", trigger, "scenarios", activeNames(e))
}
