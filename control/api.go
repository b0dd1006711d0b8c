package control

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strconv"
	"time"
)

// routes registers every endpoint; docs/api.md describes them.
func (s *Server) routes() {
	m := http.NewServeMux()
	m.HandleFunc("GET /api/health", s.health)
	m.HandleFunc("GET /api/status", s.status)
	m.HandleFunc("GET /api/scenarios", s.scenarios)
	m.HandleFunc("POST /api/scenarios/{name}/on", s.switchOn)
	m.HandleFunc("POST /api/scenarios/{name}/off", s.switchOff)
	m.HandleFunc("POST /api/reset", s.reset)
	m.HandleFunc("GET /api/rules", s.rules)
	m.HandleFunc("GET /api/devices", s.devices)
	m.HandleFunc("GET /api/explain", s.explain)
	m.HandleFunc("GET /api/events", s.events)
	m.HandleFunc("GET /api/events/recent", s.recent)
	m.Handle("GET /metrics", s.metricsHandler())
	m.HandleFunc("GET /{$}", s.dashboard)
	m.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no endpoint %s %s (see docs/api.md)", r.Method, r.URL.Path))
	})
	s.mux = m
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	w.Write(append(b, '\n'))
}

// apiError is the body of every error answer.
type apiError struct {
	Error string `json:"error"`
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, apiError{Error: msg})
}

func (s *Server) health(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"ok": true, "version": s.cfg.Version})
}

// Status is the answer of GET /api/status.
type Status struct {
	Version       string       `json:"version"`
	Seed          string       `json:"seed"` // "—" until a seed is set
	Started       time.Time    `json:"started"`
	Now           time.Time    `json:"now"`
	On            []string     `json:"on"` // scenarios on, in priority order
	Events        uint64       `json:"events"`
	EventsDropped uint64       `json:"events_dropped"`
	Reload        ReloadStatus `json:"reload"`
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	st := Status{Version: s.cfg.Version, Seed: s.cfg.Seed, Started: s.started, Now: s.sw.clock.Now(), On: []string{},
		EventsDropped: s.cfg.Hub.Dropped(), Reload: s.cfg.Reloads.Status()}
	if st.Seed == "" {
		st.Seed = "—"
	}
	for _, sc := range s.cfg.Engine.Active() {
		st.On = append(st.On, sc.Name)
	}
	if ev := s.cfg.Hub.Ring().Recent(Filter{}, 1); len(ev) == 1 {
		st.Events = ev[0].Seq
	}
	writeJSON(w, http.StatusOK, st)
}

// ScenarioJSON is one scenario in GET /api/scenarios.
type ScenarioJSON struct {
	Name        string    `json:"name"`
	Description string    `json:"description,omitempty"`
	File        string    `json:"file"`
	Optional    bool      `json:"optional"`
	On          bool      `json:"on"`
	Clients     []string  `json:"clients"` // device scope; empty: every device
	Since       time.Time `json:"since,omitzero"`
	RevertAt    time.Time `json:"revert_at,omitzero"` // when a timed switch goes back
	Services    []string  `json:"services"`
	Rules       int       `json:"rules"`
}

// ScenarioList is the answer of GET /api/scenarios.
type ScenarioList struct {
	Scenarios []ScenarioJSON `json:"scenarios"`
	// Devices are the device groups the rules define, for clients.
	Devices map[string][]string `json:"devices"`
}

func (s *Server) scenarioList() ScenarioList {
	out := ScenarioList{Scenarios: []ScenarioJSON{}, Devices: map[string][]string{}}
	for _, st := range s.cfg.Engine.Scenarios() {
		sc := st.Scenario
		j := ScenarioJSON{Name: sc.Name, Description: sc.Description, File: sc.Pos.File, Optional: sc.Optional,
			On: st.On, Clients: []string{}, Since: st.Since, Services: sc.Services(), Rules: len(sc.Rules)}
		if j.Services == nil {
			j.Services = []string{}
		}
		for _, p := range st.Clients {
			j.Clients = append(j.Clients, p.String())
		}
		j.RevertAt, _ = s.sw.RevertAt(sc.Name)
		out.Scenarios = append(out.Scenarios, j)
	}
	for name, ps := range s.cfg.Engine.Set().Devices {
		for _, p := range ps {
			out.Devices[name] = append(out.Devices[name], p.String())
		}
	}
	return out
}

func (s *Server) scenarios(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.scenarioList())
}

// SwitchRequest is the optional body of POST /api/scenarios/{name}/on|off.
type SwitchRequest struct {
	// For is how long the switch lasts ("10m"); "" or "0s": until changed.
	For string `json:"for,omitempty"`
	// Clients are device groups, addresses or CIDRs (on only); none:
	// every device.
	Clients []string `json:"clients,omitempty"`
}

const maxBody = 64 << 10

func (s *Server) switchOn(w http.ResponseWriter, r *http.Request)  { s.doSwitch(w, r, true) }
func (s *Server) switchOff(w http.ResponseWriter, r *http.Request) { s.doSwitch(w, r, false) }

func (s *Server) doSwitch(w http.ResponseWriter, r *http.Request, on bool) {
	var req SwitchRequest
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody))
	if err != nil {
		writeError(w, http.StatusBadRequest, "reading the body: "+err.Error())
		return
	}
	if len(bytes.TrimSpace(body)) > 0 {
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			writeError(w, http.StatusBadRequest, `body: `+err.Error()+` (want e.g. {"for": "10m", "clients": ["qa-phones", "192.0.2.0/24"]})`)
			return
		}
	}
	var d time.Duration
	if req.For != "" {
		if d, err = time.ParseDuration(req.For); err != nil || d < 0 {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("for: %q is not a duration (want e.g. 90s, 10m, 1h)", req.For))
			return
		}
	}
	if !on && len(req.Clients) > 0 {
		writeError(w, http.StatusBadRequest, "clients: a scenario is switched off for every device; to narrow it, switch it on with clients")
		return
	}
	clients, err := ResolveClients(s.cfg.Engine.Set(), req.Clients)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	name := r.PathValue("name")
	if err := s.sw.Set(name, on, clients, d); err != nil {
		writeError(w, http.StatusNotFound, err.Error())
		return
	}
	s.log.Info("scenario switched", "scenario", name, "on", on, "clients", prefixes(clients), "for", d)
	for _, sc := range s.scenarioList().Scenarios {
		if sc.Name == name {
			writeJSON(w, http.StatusOK, sc)
			return
		}
	}
	writeError(w, http.StatusNotFound, "scenario "+name+" is gone (a reload removed it)")
}

func (s *Server) reset(w http.ResponseWriter, r *http.Request) {
	s.sw.Reset()
	s.log.Info("every scenario switched off")
	writeJSON(w, http.StatusOK, s.scenarioList())
}

// RuleJSON is one rule in GET /api/rules.
type RuleJSON struct {
	Scenario string `json:"scenario"`
	Index    int    `json:"index"`
	At       string `json:"at"` // file:line
	Service  string `json:"service,omitempty"`
	Action   string `json:"action"`
	On       bool   `json:"on"` // its scenario is on
	Hits     uint64 `json:"hits"`
}

func (s *Server) rules(w http.ResponseWriter, r *http.Request) {
	on := map[string]bool{}
	for _, sc := range s.cfg.Engine.Active() {
		on[sc.Name] = true
	}
	out := []RuleJSON{}
	for _, h := range s.cfg.Engine.Hits() {
		out = append(out, RuleJSON{Scenario: h.Rule.Scenario, Index: h.Rule.Index, At: h.Rule.Pos.String(),
			Service: h.Rule.Service, Action: h.Rule.Action.String(), On: on[h.Rule.Scenario], Hits: h.Hits})
	}
	writeJSON(w, http.StatusOK, map[string]any{"rules": out})
}

func (s *Server) devices(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"devices": s.cfg.Hub.Devices()})
}

func (s *Server) explain(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Explain == nil {
		writeError(w, http.StatusNotImplemented, "explain is not available")
		return
	}
	q := r.URL.Query()
	t, client := q.Get("target"), q.Get("client")
	if t == "" {
		writeError(w, http.StatusBadRequest, "target: give ?target=NAME or ADDR[:PORT][/tcp|/udp], e.g. ?target=mainnet.infura.io")
		return
	}
	if client != "" {
		if _, err := netip.ParseAddr(client); err != nil {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("client: %q is not an IP address", client))
			return
		}
	}
	var b bytes.Buffer
	if err := s.cfg.Explain(&b, t, client); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"target": t, "client": client, "text": b.String()})
}

func filterOf(r *http.Request) Filter {
	q := r.URL.Query()
	return Filter{Device: q.Get("device"), Service: q.Get("service"), Blocked: q.Get("blocked") == "1" || q.Get("blocked") == "true"}
}

func (s *Server) recent(w http.ResponseWriter, r *http.Request) {
	limit := 100
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("limit: %q is not a count", v))
			return
		}
		limit = n
	}
	ev := s.cfg.Hub.Ring().Recent(filterOf(r), limit)
	if ev == nil {
		ev = []Event{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"events": ev, "dropped": s.cfg.Hub.Dropped()})
}

// sseBuffer is how many events an SSE client may lag behind before it
// loses some.
const sseBuffer = 1024

// events streams events as Server-Sent Events: "id: SEQ", "event:
// decision", "data: JSON". A reconnecting client's Last-Event-ID (or
// ?after=SEQ) replays what it missed from the ring.
func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	fl, ok := w.(http.Flusher)
	if !ok {
		writeError(w, http.StatusInternalServerError, "streaming unsupported")
		return
	}
	after := r.Header.Get("Last-Event-ID")
	if v := r.URL.Query().Get("after"); v != "" {
		after = v
	}
	var since uint64
	if after != "" {
		n, err := strconv.ParseUint(after, 10, 64)
		if err != nil {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("after: %q is not an event id", after))
			return
		}
		since = n
	}
	f := filterOf(r)
	sub, past := s.cfg.Hub.Subscribe(sseBuffer, since)
	defer sub.Close()
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	fmt.Fprint(w, ": unicorn events\n\n")
	send := func(e *Event) error {
		if !f.match(e) {
			return nil
		}
		b, _ := json.Marshal(e)
		_, err := fmt.Fprintf(w, "id: %d\nevent: decision\ndata: %s\n\n", e.Seq, b)
		return err
	}
	for i := range past {
		if send(&past[i]) != nil {
			return
		}
	}
	fl.Flush()
	ping := time.NewTicker(15 * time.Second)
	defer ping.Stop()
	var dropped uint64
	for {
		select {
		case <-r.Context().Done():
			return
		case <-s.stop.Done():
			return
		case <-ping.C:
			if _, err := fmt.Fprint(w, ": ping\n\n"); err != nil {
				return
			}
		case e, ok := <-sub.C():
			if !ok {
				return
			}
			if send(&e) != nil {
				return
			}
			// Send what else is queued before flushing: one write for a burst.
			for more := true; more; {
				select {
				case e, ok := <-sub.C():
					if !ok {
						return
					}
					if send(&e) != nil {
						return
					}
				default:
					more = false
				}
			}
			if d := sub.Dropped(); d != dropped {
				dropped = d
				fmt.Fprintf(w, "event: dropped\ndata: {\"dropped\":%d}\n\n", d)
			}
		}
		fl.Flush()
	}
}
