package control

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/chaos-unicorn/unicorn/dnsblock"
	"github.com/chaos-unicorn/unicorn/proxy"
	"github.com/chaos-unicorn/unicorn/rules"
)

// Config configures a Server. The zero value is invalid; fill the fields
// marked MANDATORY.
type Config struct {
	// Engine is the rule engine the API reads and switches. MANDATORY.
	Engine *rules.Engine
	// Hub carries the events. MANDATORY.
	Hub *Hub
	// Switches switch scenarios, for a while if asked. OPTIONAL: nil
	// means NewSwitches(Engine, nil, Logger).
	Switches *Switches
	// Reloads is where rule reloads report. OPTIONAL: nil shows no reload.
	Reloads *Reloads
	// Token, if not empty, must come with every request. OPTIONAL on
	// loopback; the caller sets one elsewhere (TokenRequired).
	Token string
	// Version is shown by /api/health and the dashboard.
	Version string
	// Seed is the random seed of the faults (serve --seed), shown as is;
	// "" shows "—".
	Seed string
	// Explain writes what unicorn explain prints for target as seen by
	// the device at client ("" for none); an error means the target is
	// not valid. OPTIONAL: nil answers 501.
	Explain func(w io.Writer, target, client string) error
	// DNSStats and ProxyStats feed the metrics. OPTIONAL.
	DNSStats   func() dnsblock.Stats
	ProxyStats func() proxy.Stats
	// Logger receives API errors and switches, with component=control.
	// OPTIONAL: nil means slog.Default().
	Logger *slog.Logger
}

// Server is the control plane's HTTP server: the API, the SSE stream, the
// metrics and the dashboard. Its handlers read the engine's state and
// switch it atomically; none waits on traffic.
type Server struct {
	cfg     Config
	sw      *Switches
	log     *slog.Logger
	started time.Time
	mux     *http.ServeMux

	mu     sync.Mutex
	srvs   []*http.Server
	closed bool
	// stop ends the SSE streams when the server shuts down.
	stop   context.Context
	cancel context.CancelFunc
}

// New returns a server for cfg.
func New(cfg Config) (*Server, error) {
	if cfg.Engine == nil || cfg.Hub == nil {
		return nil, errors.New("control: Config.Engine and Config.Hub are mandatory")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Switches == nil {
		cfg.Switches = NewSwitches(cfg.Engine, nil, cfg.Logger)
	}
	if cfg.Reloads == nil {
		cfg.Reloads = &Reloads{}
	}
	s := &Server{cfg: cfg, sw: cfg.Switches, log: cfg.Logger.With(slog.String("component", "control")), started: time.Now()}
	s.stop, s.cancel = context.WithCancel(context.Background())
	s.routes()
	return s, nil
}

// Handler returns the server's handler without the access checks (tests
// and embedding).
func (s *Server) Handler() http.Handler { return s.mux }

// Serve serves on l until Close. Requests must carry Config.Token if set;
// on a loopback listener, their Host must be a loopback name.
func (s *Server) Serve(l net.Listener) error {
	loop := !TokenRequired(l.Addr().String())
	srv := &http.Server{
		Handler:           guard(s.cfg.Token, loop, s.mux),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		l.Close()
		return nil
	}
	s.srvs = append(s.srvs, srv)
	s.mu.Unlock()
	err := srv.Serve(l)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Close ends the SSE streams and stops the server.
func (s *Server) Close() error {
	s.cancel()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	var errs []error
	for _, srv := range s.srvs {
		errs = append(errs, srv.Close())
	}
	return errors.Join(errs...)
}
