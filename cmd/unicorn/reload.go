package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/chaos-unicorn/unicorn/rules"
	"github.com/urfave/cli/v2"
)

// reloadOnHangup reloads the rules (the same --rules paths and --scenario
// names) into e each time the process gets SIGHUP, until ctx is done. A
// reload that fails logs every error and leaves the rules in force as they
// were.
func reloadOnHangup(ctx context.Context, c *cli.Context, e *rules.Engine, log *slog.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			reload(c, e, log)
		}
	}
}

func reload(c *cli.Context, e *rules.Engine, log *slog.Logger) {
	set, active, err := loadRules(c)
	if err == nil {
		err = e.Swap(set, active)
	}
	if err != nil {
		for _, re := range rules.Errors(err) {
			log.Error("rule error", slog.String("at", re.Pos.String()), slog.String("field", re.Path), slog.String("error", re.Error()))
		}
		log.Error("reload failed; the rules in force are unchanged", "scenarios", activeNames(e), "err", err)
		return
	}
	log.Info("rules reloaded", "scenarios", activeNames(e))
}
