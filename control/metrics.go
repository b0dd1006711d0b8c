package control

import (
	"net/http"
	"strconv"

	"github.com/chaos-unicorn/unicorn/dnsblock"
	"github.com/chaos-unicorn/unicorn/rules"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metricsHandler serves /metrics from a registry of the server's own: the
// collector reads the counters at scrape time, so nothing is counted twice
// and the decision path pays only its atomic adds.
func (s *Server) metricsHandler() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		&collector{s: s},
	)
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
}

var (
	descDecisions = prometheus.NewDesc("unicorn_decisions_total",
		"Decisions that were not a plain allow, by layer and action.", []string{"layer", "action"}, nil)
	descRuleHits = prometheus.NewDesc("unicorn_rule_hits_total",
		"Flows decided by each rule since its rules were loaded.", []string{"scenario", "rule", "at", "service", "action"}, nil)
	descScenarioOn = prometheus.NewDesc("unicorn_scenario_on",
		"1 when the scenario is switched on (for some or every device).", []string{"scenario"}, nil)
	descDropped = prometheus.NewDesc("unicorn_events_dropped_total",
		"Decisions the event hub dropped because it was behind.", nil, nil)
	descReloads = prometheus.NewDesc("unicorn_rule_reloads_total",
		"Rule reloads tried, by result.", []string{"result"}, nil)
	descDNSQueries = prometheus.NewDesc("unicorn_dns_queries_total",
		"DNS questions answered or forwarded.", nil, nil)
	descDNSCacheHits = prometheus.NewDesc("unicorn_dns_cache_hits_total",
		"Allowed DNS questions answered from the cache.", nil, nil)
	descDNSUpstream = prometheus.NewDesc("unicorn_dns_upstream_exchanges_total",
		"Exchanges with the upstream resolvers, by result.", []string{"result"}, nil)
	descDNSLatency = prometheus.NewDesc("unicorn_dns_upstream_duration_seconds",
		"Time an upstream exchange took, failover included.", nil, nil)
	descProxyConns = prometheus.NewDesc("unicorn_proxy_connections_total",
		"Client connections the proxy accepted.", nil, nil)
	descProxyOpen = prometheus.NewDesc("unicorn_proxy_open_connections",
		"Client connections open now, tunnels included.", nil, nil)
	descProxyTunnels = prometheus.NewDesc("unicorn_proxy_tunnels_total",
		"CONNECT tunnels relayed without interception.", nil, nil)
	descProxyBytes = prometheus.NewDesc("unicorn_proxy_tunnel_bytes_total",
		"Bytes relayed by CONNECT tunnels, counted when a tunnel ends.", []string{"direction"}, nil)
)

// collector reads the engine, the hub and the front ends' stats.
type collector struct{ s *Server }

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	prometheus.DescribeByCollect(c, ch)
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	s := c.s
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	for l := rules.LayerDNS; l <= rules.LayerUDP; l++ {
		for a := rules.ActionReject; a < numActionSlots; a++ {
			if a.String() == "unknown" {
				break
			}
			counter(descDecisions, s.cfg.Hub.Decisions(l, a), l.String(), a.String())
		}
	}
	for _, h := range s.cfg.Engine.Hits() {
		r := h.Rule
		counter(descRuleHits, h.Hits, r.Scenario, strconv.Itoa(r.Index), r.Pos.String(), r.Service, r.Action.String())
	}
	for _, st := range s.cfg.Engine.Scenarios() {
		v := 0.0
		if st.On {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(descScenarioOn, prometheus.GaugeValue, v, st.Scenario.Name)
	}
	counter(descDropped, s.cfg.Hub.Dropped())
	rs := s.cfg.Reloads.Status()
	counter(descReloads, rs.Reloads-rs.Failures, "ok")
	counter(descReloads, rs.Failures, "error")
	if s.cfg.DNSStats != nil {
		st := s.cfg.DNSStats()
		counter(descDNSQueries, st.Queries)
		counter(descDNSCacheHits, st.CacheHits)
		counter(descDNSUpstream, st.Upstream-st.UpstreamErrors, "ok")
		counter(descDNSUpstream, st.UpstreamErrors, "error")
		buckets := make(map[float64]uint64, len(dnsblock.LatencyBuckets))
		var cum uint64
		for i, b := range dnsblock.LatencyBuckets {
			cum += st.UpstreamLatency[i]
			buckets[b.Seconds()] = cum
		}
		ch <- prometheus.MustNewConstHistogram(descDNSLatency, st.Upstream, st.UpstreamTime.Seconds(), buckets)
	}
	if s.cfg.ProxyStats != nil {
		st := s.cfg.ProxyStats()
		counter(descProxyConns, st.Connections)
		ch <- prometheus.MustNewConstMetric(descProxyOpen, prometheus.GaugeValue, float64(st.Open))
		counter(descProxyTunnels, st.Tunnels)
		counter(descProxyBytes, st.BytesUp, "up")
		counter(descProxyBytes, st.BytesDown, "down")
	}
}

var _ prometheus.Collector = (*collector)(nil)
