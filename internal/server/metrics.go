package server

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/roomchat/roomchat/internal/protocol"
	"github.com/roomchat/roomchat/internal/room"
)

// metrics are the server's Prometheus series, on a registry of its own so
// that several servers can run in one process (tests).
type metrics struct {
	reg        *prometheus.Registry
	conns      prometheus.Gauge
	connsTotal prometheus.Counter
	refused    prometheus.Counter
	framesIn   prometheus.Counter
	framesOut  prometheus.Counter
	writes     prometheus.Counter
	msgsIn     prometheus.Counter
	slow       prometheus.Counter
	errors     *prometheus.CounterVec
	tcpRefused *prometheus.CounterVec
	idleClosed prometheus.Counter
}

// newMetrics registers the server's series and the gauges read from s. It
// is long only because it declares each series with its name and help
// text beside it.
func newMetrics(s *Server) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		conns: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "roomchat_connections", Help: "Open WebSocket connections.",
		}),
		connsTotal: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "roomchat_connections_total", Help: "WebSocket connections accepted.",
		}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "roomchat_connections_refused_total", Help: "WebSocket upgrades refused (bad handshake, foreign Origin, server full or a per-address limit).",
		}),
		framesIn: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "roomchat_frames_received_total", Help: "Text frames received from clients.",
		}),
		framesOut: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "roomchat_events_sent_total", Help: "Server events written to clients (several may share a frame with batching).",
		}),
		writes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "roomchat_writes_total", Help: "Writes to client sockets: each writes everything queued for one connection when its writer woke (roomchat_events_sent_total over this is events per write).",
		}),
		msgsIn: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "roomchat_messages_received_total", Help: "Valid chat messages received over WebSocket.",
		}),
		slow: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "roomchat_slow_consumers_total", Help: "Connections closed with 1013 because they could not keep up.",
		}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "roomchat_errors_total", Help: "Error frames and responses sent, by code.",
		}, []string{"code"}),
		tcpRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "roomchat_tcp_refused_total", Help: "TCP connections closed as soon as accepted, by reason: server_full (at the connection limit with none idle) or address (past -ip-http-conns).",
		}, []string{"reason"}),
		idleClosed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "roomchat_tcp_idle_closed_total", Help: "Idle keep-alive HTTP connections closed to make room for a new connection at the connection limit.",
		}),
	}
	m.tcpRefused.WithLabelValues("server_full")
	m.tcpRefused.WithLabelValues("address")
	for _, code := range protocol.ErrorCodes {
		m.errors.WithLabelValues(code)
	}
	m.reg.MustRegister(m.conns, m.connsTotal, m.refused, m.framesIn, m.framesOut, m.writes, m.msgsIn, m.slow, m.errors,
		m.tcpRefused, m.idleClosed,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "roomchat_tcp_connections", Help: "TCP connections open on the main listener: HTTP ones (idle or not) and WebSockets.",
		}, func() float64 { return float64(s.sockets.count()) }),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "roomchat_rooms", Help: "Rooms with at least one member.",
		}, func() float64 { return float64(s.reg.Stats().Rooms) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "roomchat_messages_stored_total", Help: "Chat messages stored (WebSocket and HTTP).",
		}, func() float64 { return float64(s.reg.Stats().Stored) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "roomchat_messages_delivered_total", Help: "msg events queued to room members.",
		}, func() float64 { return float64(s.reg.Stats().Deliveries) }),
	)
	for budget, n := range map[string]func(room.BudgetCounts) uint64{
		"room_msgs":   func(b room.BudgetCounts) uint64 { return b.RoomMsgs },
		"room_events": func(b room.BudgetCounts) uint64 { return b.RoomEvents },
		"room_bytes":  func(b room.BudgetCounts) uint64 { return b.RoomBytes },
		"room_joins":  func(b room.BudgetCounts) uint64 { return b.RoomJoins },
		"user":        func(b room.BudgetCounts) uint64 { return b.User },
	} {
		m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name:        "roomchat_budget_refusals_total",
			Help:        "Frames refused with rate_limited by a budget: a room's messages, custom events, bytes or joins, or a user's frames over all its connections.",
			ConstLabels: prometheus.Labels{"budget": budget},
		}, func() float64 { return float64(n(s.reg.Stats().Refused)) }))
	}
	m.reg.MustRegister(policyInfo{s.reg}, moderationActions{s.reg})
	m.reg.MustRegister(s.cfg.Collectors...)
	return m
}

// MetricsHandler serves the server's Prometheus metrics, as GET /metrics
// does unless Config.SeparateMetrics is set. It applies no Host check:
// mount it where only the scrapers reach.
func (s *Server) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{})
}

// policyDesc is roomchat_policy_info: 1, labelled with the hash of the
// effective policy in force (SPEC §9), so that nodes of a cluster whose
// files differ show up.
var policyDesc = prometheus.NewDesc("roomchat_policy_info", "Always 1; hash labels the effective policy in force (roomchatd -check-config prints it).", []string{"hash"}, nil)

// policyInfo collects policyDesc from the registry's policy at each scrape.
type policyInfo struct{ reg *room.Registry }

func (p policyInfo) Describe(ch chan<- *prometheus.Desc) { ch <- policyDesc }

func (p policyInfo) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(policyDesc, prometheus.GaugeValue, 1, p.reg.Policies().Config().Hash())
}

// actionsDesc is roomchat_moderation_actions_total{action}: SPEC §11's
// actions taken on this node (redact, kick, ban, unban, mute, unmute,
// configure, clear).
var actionsDesc = prometheus.NewDesc("roomchat_moderation_actions_total", "Moderation actions taken on this node, by action.", []string{"action"}, nil)

type moderationActions struct{ reg *room.Registry }

func (m moderationActions) Describe(ch chan<- *prometheus.Desc) { ch <- actionsDesc }

func (m moderationActions) Collect(ch chan<- prometheus.Metric) {
	for action, n := range m.reg.Actions() {
		ch <- prometheus.MustNewConstMetric(actionsDesc, prometheus.CounterValue, float64(n), action)
	}
}
