package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"

	"github.com/chaos-unicorn/unicorn/control"
	"github.com/urfave/cli/v2"
)

func eventsCommand() *cli.Command {
	return &cli.Command{
		Name:  "events",
		Usage: "show what a running unicorn blocked or slowed down, and for whom",
		Description: `Prints the recent decisions that were not a plain allow (from the running
unicorn's memory), oldest first; --follow keeps printing new ones as they
happen until Ctrl-C. For a record on disk, start serve with --events FILE.`,
		Flags: append(clientFlags(),
			&cli.BoolFlag{Name: "follow", Aliases: []string{"f"}, Usage: "keep printing events as they happen"},
			&cli.StringFlag{Name: "device", Usage: "only the events of the device at `IP`"},
			&cli.StringFlag{Name: "service", Usage: "only the events of `NAME`, a service or a scenario"},
			&cli.IntFlag{Name: "limit", Value: 50, Usage: "print at most `N` recent events first (0: all in memory)"},
			&cli.BoolFlag{Name: "json", Usage: "print each event as a JSON line"},
		),
		Action: events,
	}
}

func events(c *cli.Context) error {
	a := newAPIClient(c)
	q := url.Values{}
	if d := c.String("device"); d != "" {
		q.Set("device", d)
	}
	if s := c.String("service"); s != "" {
		q.Set("service", s)
	}
	q.Set("limit", strconv.Itoa(c.Int("limit")))
	var recent struct{ Events []control.Event }
	if err := a.call(c.Context, "GET", "/api/events/recent?"+q.Encode(), nil, &recent); err != nil {
		return err
	}
	w := c.App.Writer
	var last uint64
	for _, e := range recent.Events {
		printEvent(w, &e, c.Bool("json"))
		last = e.Seq
	}
	if !c.Bool("follow") {
		return nil
	}
	q.Del("limit")
	q.Set("after", strconv.FormatUint(last, 10))
	resp, err := a.request(c.Context, "GET", "/api/events?"+q.Encode(), nil)
	if err != nil {
		if c.Context.Err() != nil {
			return nil // Ctrl-C while connecting
		}
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		var e control.Event
		if json.Unmarshal([]byte(data), &e) != nil || e.Seq == 0 {
			continue // "dropped" notices and the like
		}
		printEvent(w, &e, c.Bool("json"))
	}
	if err := sc.Err(); err != nil && c.Context.Err() == nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("event stream from %s ended: %v", a.addr, err)
	}
	if c.Context.Err() == nil {
		return cli.Exit("unicorn stopped: the event stream ended", 1)
	}
	return nil
}

func printEvent(w io.Writer, e *control.Event, asJSON bool) {
	if asJSON {
		b, _ := json.Marshal(e)
		fmt.Fprintf(w, "%s\n", b)
		return
	}
	dev := e.Device
	if dev == "" {
		dev = "-"
	}
	target := e.Target
	if e.Path != "" {
		target += " " + e.Method + " " + e.Path
	}
	by := ""
	if e.Scenario != "" {
		by = fmt.Sprintf("  (%s rules[%d] %s)", e.Scenario, e.RuleIndex, e.Rule)
	}
	fmt.Fprintf(w, "%s %-15s %-5s %s -> %s%s\n", e.Time.Local().Format("15:04:05.000"), dev, e.Layer, target, e.Outcome, by)
}
