package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"
)

// clientFlags are the flags of the commands that talk to a running unicorn.
func clientFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "control", Value: defaultControl, Usage: "`ADDR` of the running unicorn's control API (serve --control)", EnvVars: []string{"UNICORN_CONTROL"}},
		&cli.StringFlag{Name: "token", Usage: "`TOKEN` for a control API off loopback (serve printed it at start)", EnvVars: []string{"UNICORN_TOKEN"}},
	}
}

// apiTimeout bounds every control API call but the event stream.
const apiTimeout = 10 * time.Second

// apiClient talks to a running unicorn's control API.
type apiClient struct {
	base  string // http://host:port
	addr  string
	token string
}

func newAPIClient(c *cli.Context) *apiClient {
	addr := strings.TrimSuffix(strings.TrimSpace(c.String("control")), "/")
	return &apiClient{base: apiBase(addr), addr: addr, token: c.String("token")}
}

// apiBase is the URL of the control API at addr (host:port or a URL).
func apiBase(addr string) string {
	addr = strings.TrimSuffix(strings.TrimSpace(addr), "/")
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	return addr
}

// request sends method path with body (JSON-encoded unless nil).
func (a *apiClient) request(ctx context.Context, method, path string, body any) (*http.Response, error) {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, r)
	if err != nil {
		return nil, cli.Exit(fmt.Sprintf("--control %q: %v (want host:port, e.g. 127.0.0.1:8053)", a.addr, err), 2)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if a.token != "" {
		req.Header.Set("Authorization", "Bearer "+a.token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, a.reachErr(err)
	}
	if resp.StatusCode >= 400 {
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		var e struct{ Error string }
		if json.Unmarshal(b, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(b))
		}
		if resp.StatusCode == http.StatusUnauthorized {
			return nil, cli.Exit(fmt.Sprintf("unicorn at %s wants its control token: give --token TOKEN or set UNICORN_TOKEN (serve printed it at start)", a.addr), 1)
		}
		return nil, cli.Exit(e.Error, 1)
	}
	return resp, nil
}

// call sends method path with body and decodes the JSON answer into out.
func (a *apiClient) call(ctx context.Context, method, path string, body, out any) error {
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	resp, err := a.request(ctx, method, path, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("%s %s: unreadable answer from %s (is it unicorn's control address?): %v", method, path, a.addr, err)
	}
	return nil
}

// reachErr says what to do when the control API cannot be reached.
func (a *apiClient) reachErr(err error) error {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return cli.Exit(fmt.Sprintf("cannot reach unicorn at %s: connection refused.\n"+
			"Is unicorn serve running? Start it with make run (or unicorn serve); if it runs with another --control, give that address with --control or UNICORN_CONTROL.", a.addr), 1)
	case errors.As(err, &ne) && ne.Timeout():
		return cli.Exit(fmt.Sprintf("unicorn at %s did not answer within %v: is --control the right address?", a.addr, apiTimeout), 1)
	}
	return cli.Exit(fmt.Sprintf("cannot reach unicorn at %s: %v\nIs unicorn serve running? Start it with make run.", a.addr, err), 1)
}

// explainRemote prints what the running unicorn's /api/explain says.
func explainRemote(c *cli.Context, target, client string) error {
	q := url.Values{"target": {target}}
	if client != "" {
		q.Set("client", client)
	}
	var out struct{ Text string }
	if err := newAPIClient(c).call(c.Context, "GET", "/api/explain?"+q.Encode(), nil, &out); err != nil {
		return err
	}
	fmt.Fprint(c.App.Writer, out.Text)
	return nil
}
