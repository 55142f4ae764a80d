package main

import (
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/roomchat/roomchat/internal/protocol"
	"github.com/roomchat/roomchat/internal/room"
	"github.com/roomchat/roomchat/internal/server"
)

// config is everything roomchatd can be told.
type config struct {
	addr, db, origins, redis, publicURL string
	hosts, debugAddr, metricsAddr       string
	synchronous                         string   // -sync: normal or full
	hostList                            []string // parsed from hosts by check
	logLevel, logFormat                 string
	limits                              protocol.Limits
	retention                           int
	redisWait                           int
	retentionAge                        time.Duration
	maxQueue                            int
	writeTimeout                        time.Duration
	pingInterval, pingTimeout           time.Duration
	grace, resumeWindow                 time.Duration
	resumeMaxAge, shutdownTimeout       time.Duration

	// Connection and per-address limits, HTTP timeouts.
	maxConns, ipConns, ipConnBurst, ipHTTPBurst int
	ipHTTPConns                                 int
	ipConnRate, ipHTTPRate                      float64
	trustProxy                                  string
	trustedProxies                              []netip.Prefix // parsed from trustProxy by check
	httpTimeout, httpIdle                       time.Duration

	// -config, and -check-config's print-and-exit.
	configFile  string
	checkConfig bool

	// Room budgets; 0 turns one off.
	roomRate, roomEvents, roomBytes, roomJoins float64
}

// flagTable registers every flag with its environment variable and
// default, in one place, so that -h cannot drift from what is read. It is
// long on purpose: its one line per flag is the table itself, and
// splitting it would scatter the one list a reader checks.
func (c *config) flagTable(fs *flag.FlagSet) map[string]string {
	envs := map[string]string{}
	add := func(name, env string, def any, usage string) {
		envs[name] = env
		usage = fmt.Sprintf("%s (env %s)", usage, env)
		switch p := def.(type) {
		case *string:
			fs.StringVar(p, name, *p, usage)
		case *int:
			fs.IntVar(p, name, *p, usage)
		case *int64:
			fs.Int64Var(p, name, *p, usage)
		case *float64:
			fs.Float64Var(p, name, *p, usage)
		case *time.Duration:
			fs.DurationVar(p, name, *p, usage)
		case *bool:
			fs.BoolVar(p, name, *p, usage)
		default:
			panic(fmt.Sprintf("flag %s: unsupported type %T", name, def))
		}
	}
	l := &c.limits
	add("addr", "ROOMCHAT_ADDR", &c.addr, "listen address")
	add("db", "ROOMCHAT_DB", &c.db, `SQLite file for history; ":memory:" keeps none`)
	add("sync", "ROOMCHAT_SYNC", &c.synchronous, "SQLite durability: normal (an acked message survives a crash of the process; after a power loss every room gets a new epoch) or full (also a power loss, at an fsync per commit)")
	add("rate", "ROOMCHAT_RATE", &l.Rate, "messages per second per connection; 0 turns the limit off")
	add("burst", "ROOMCHAT_BURST", &l.Burst, "messages a connection may send at once before -rate applies")
	add("room-rate", "ROOMCHAT_ROOM_RATE", &c.roomRate, "messages per second one room takes from all its members together (twice as many at once); 0 turns it off, and so does -rate 0")
	add("room-events", "ROOMCHAT_ROOM_EVENTS", &c.roomEvents, "custom events per second one room takes from all its members together (twice as many at once); 0 turns it off, and so does -rate 0")
	add("room-bytes", "ROOMCHAT_ROOM_BYTES", &c.roomBytes, "bytes of messages and custom events per second one room takes from all its members together (twice as many at once); 0 turns it off, and so does -rate 0")
	add("room-joins", "ROOMCHAT_ROOM_JOINS", &c.roomJoins, "joins per second into one room (ten seconds' worth at once); 0 turns it off, and so does -rate 0")
	add("origins", "ROOMCHAT_ORIGINS", &c.origins, "browser origins allowed besides the server's own, comma-separated: chat.example.com, *.example.com or https://chat.example.com")
	add("redis", "ROOMCHAT_REDIS", &c.redis, "cluster mode: redis://[user:password@]host:port[/db] of the Redis (≥ 6.2) that the nodes share, or redis+sentinel://[user:password@]host:26379[,host:26379]/mastername[/db] for a primary that Sentinels manage; it replaces -db")
	add("redis-wait", "ROOMCHAT_REDIS_WAIT", &c.redisWait, "with -redis: replicas that must have a message before it is acked (Redis WAIT), so that a failover loses no acked message; fewer within a second refuses it with store_unavailable (it may be stored: a retry with the same id is acked once). 0 acks once the primary has it")
	add("url", "ROOMCHAT_URL", &c.publicURL, "public base URL of share links, e.g. https://chat.example.com; empty uses each request's host. Its host is one the server answers to (see -hosts)")
	add("hosts", "ROOMCHAT_HOSTS", &c.hosts, "host names (any port) or host:port the server answers to, comma-separated, besides the host of -url; with either set, another Host gets 421 bad_host (not /healthz, /readyz). Empty with no -url answers every Host")
	add("max-message", "ROOMCHAT_MAX_MESSAGE", &l.MaxMessage, "longest message, in characters after trimming")
	add("max-name", "ROOMCHAT_MAX_NAME", &l.MaxName, "longest display name, in characters after trimming")
	add("max-room-id", "ROOMCHAT_MAX_ROOM_ID", &l.MaxRoomID, "longest room ID, in characters")
	add("max-frame", "ROOMCHAT_MAX_FRAME", &l.MaxFrame, "largest frame or HTTP body, in bytes; a larger frame closes with 1009")
	add("room-capacity", "ROOMCHAT_ROOM_CAPACITY", &l.RoomCapacity, "most members in one room")
	add("history", "ROOMCHAT_HISTORY", &l.History, "messages sent with joined when no since is given")
	add("retention", "ROOMCHAT_RETENTION", &c.retention, "most messages kept per room")
	add("retention-age", "ROOMCHAT_RETENTION_AGE", &c.retentionAge, "drop messages older than this; 0 keeps them")
	add("queue", "ROOMCHAT_QUEUE", &c.maxQueue, "bytes a connection may have queued before it is closed as too slow (1013)")
	add("write-timeout", "ROOMCHAT_WRITE_TIMEOUT", &c.writeTimeout, "longest a write to a connection may go without progress (the socket taking no byte) before it is closed as too slow (1013)")
	add("ping", "ROOMCHAT_PING", &c.pingInterval, "keepalive ping interval")
	add("ping-timeout", "ROOMCHAT_PING_TIMEOUT", &c.pingTimeout, "how long a pong may take before the connection is closed")
	add("grace", "ROOMCHAT_GRACE", &c.grace, "how long a dropped connection stays in its rooms before a presence leave")
	add("resume-window", "ROOMCHAT_RESUME_WINDOW", &c.resumeWindow, "how long a resume token keeps its userID after a drop")
	add("resume-max-age", "ROOMCHAT_RESUME_MAX_AGE", &c.resumeMaxAge, "how old a resume token may be and still resume; a connection gets a new token when its own is half that old")
	add("shutdown-timeout", "ROOMCHAT_SHUTDOWN_TIMEOUT", &c.shutdownTimeout, "how long shutdown waits for connections to close")
	add("max-conns", "ROOMCHAT_MAX_CONNS", &c.maxConns, "most WebSocket connections open at once (503 server_full past it); 0 derives it from the open-files limit: the limit less 256 (every connection is also counted against the limit less 128)")
	add("ip-conns", "ROOMCHAT_IP_CONNS", &c.ipConns, "most WebSocket connections open at once per client address (an IPv6 /64); 0 is no limit")
	add("ip-conn-rate", "ROOMCHAT_IP_CONN_RATE", &c.ipConnRate, "new WebSocket connections per second per client address; 0 is no limit")
	add("ip-conn-burst", "ROOMCHAT_IP_CONN_BURST", &c.ipConnBurst, "new WebSocket connections a client address may open at once before -ip-conn-rate applies")
	add("ip-http-conns", "ROOMCHAT_IP_HTTP_CONNS", &c.ipHTTPConns, "most HTTP connections (not WebSockets; idle keep-alive ones included) open at once per client address, the socket's peer; past it a new one is closed at once. 0 is no limit")
	add("ip-http-rate", "ROOMCHAT_IP_HTTP_RATE", &c.ipHTTPRate, "HTTP requests (other than /ws) per second per client address; 0 is no limit")
	add("ip-http-burst", "ROOMCHAT_IP_HTTP_BURST", &c.ipHTTPBurst, "HTTP requests a client address may make at once before -ip-http-rate applies")
	add("trust-proxy", "ROOMCHAT_TRUST_PROXY", &c.trustProxy, "reverse proxies (CIDRs, comma-separated) whose X-Forwarded-For names the client address for the per-address limits; empty trusts none")
	add("http-timeout", "ROOMCHAT_HTTP_TIMEOUT", &c.httpTimeout, "longest an HTTP request may take to arrive (headers and body) and a response to be written (a page of messages: per 128 KiB of it)")
	add("http-idle-timeout", "ROOMCHAT_HTTP_IDLE_TIMEOUT", &c.httpIdle, "how long an idle keep-alive HTTP connection is kept open")
	add("metrics-addr", "ROOMCHAT_METRICS_ADDR", &c.metricsAddr, "address to serve /metrics on instead of -addr, e.g. 127.0.0.1:9090 or a private interface; empty serves it on -addr")
	add("debug-addr", "ROOMCHAT_DEBUG_ADDR", &c.debugAddr, "address for Go's pprof handlers (/debug/pprof/), e.g. 127.0.0.1:6060; empty serves none")
	add("log-level", "ROOMCHAT_LOG_LEVEL", &c.logLevel, "debug, info, warn or error")
	add("log-format", "ROOMCHAT_LOG_FORMAT", &c.logFormat, "text or json")
	add("config", "ROOMCHAT_CONFIG", &c.configFile, "TOML file of namespaces, room policy and identity (docs/operations.md); SIGHUP reloads it. Flags set the built-in defaults under it")
	add("check-config", "ROOMCHAT_CHECK_CONFIG", &c.checkConfig, "print the effective policy of every namespace (from -config over the flags) and exit")
	return envs
}

func defaultConfig() config {
	return config{
		addr:            ":8080",
		db:              "./data/roomchat.db",
		synchronous:     "normal",
		limits:          protocol.DefaultLimits(),
		retention:       10000,
		maxQueue:        1 << 20,
		writeTimeout:    10 * time.Second,
		pingInterval:    25 * time.Second,
		pingTimeout:     10 * time.Second,
		grace:           15 * time.Second,
		resumeWindow:    2 * time.Minute,
		resumeMaxAge:    24 * time.Hour,
		shutdownTimeout: 10 * time.Second,
		ipConnBurst:     20,
		ipHTTPBurst:     100,
		roomRate:        room.DefaultRoomRate,
		roomEvents:      room.DefaultRoomEvents,
		roomBytes:       room.DefaultRoomBytes,
		roomJoins:       room.DefaultRoomJoins,
		httpTimeout:     30 * time.Second,
		httpIdle:        60 * time.Second,
		logLevel:        "info",
		logFormat:       "text",
	}
}

// parseConfig reads the environment, then the command line, which wins.
func parseConfig(args []string, stderr io.Writer) (config, error) {
	c := defaultConfig()
	fs := flag.NewFlagSet("roomchatd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	envs := c.flagTable(fs)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: roomchatd [flags]\n\nroomchatd serves roomchat: WebSocket chat rooms on /ws, the HTTP API on /api and\nthe web client on /. Every flag can also be set by its environment variable;\na flag on the command line wins.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	for name, env := range envs {
		if v, ok := os.LookupEnv(env); ok {
			if err := fs.Set(name, v); err != nil {
				return c, usageError(stderr, "%s=%q: %v", env, v, err)
			}
		}
	}
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return c, err
		}
		return c, errUsage
	}
	if fs.NArg() > 0 {
		return c, usageError(stderr, "unexpected argument %q (see roomchatd -h)", fs.Arg(0))
	}
	if err := c.check(); err != nil {
		return c, usageError(stderr, "%v", err)
	}
	return c, nil
}

func (c *config) check() error {
	l := c.limits
	switch {
	case l.Rate < 0:
		return fmt.Errorf("-rate must be ≥ 0")
	case l.Rate > 0 && l.Burst < 1:
		return fmt.Errorf("-burst must be ≥ 1")
	case l.MaxMessage < 1, l.MaxName < 1, l.MaxRoomID < 1, l.RoomCapacity < 1, l.History < 0:
		return fmt.Errorf("-max-message, -max-name, -max-room-id and -room-capacity must be ≥ 1, -history ≥ 0")
	case l.MaxFrame < 1024:
		return fmt.Errorf("-max-frame must be at least 1024 bytes")
	case c.retention < 1:
		return fmt.Errorf("-retention must be ≥ 1")
	case c.redisWait < 0:
		return fmt.Errorf("-redis-wait must be ≥ 0")
	case c.redisWait > 0 && c.redis == "":
		return fmt.Errorf("-redis-wait needs -redis")
	case c.synchronous != "normal" && c.synchronous != "full":
		return fmt.Errorf("-sync must be normal or full")
	case c.logFormat != "text" && c.logFormat != "json":
		return fmt.Errorf("-log-format must be text or json")
	case c.maxConns < 0, c.ipConns < 0, c.ipConnRate < 0, c.ipHTTPRate < 0, c.ipHTTPConns < 0:
		return fmt.Errorf("-max-conns, -ip-conns, -ip-conn-rate, -ip-http-rate and -ip-http-conns must be ≥ 0")
	case c.roomRate < 0, c.roomEvents < 0, c.roomBytes < 0, c.roomJoins < 0:
		return fmt.Errorf("-room-rate, -room-events, -room-bytes and -room-joins must be ≥ 0 (0 turns one off)")
	case c.ipConnBurst < 1, c.ipHTTPBurst < 1:
		return fmt.Errorf("-ip-conn-burst and -ip-http-burst must be ≥ 1")
	case c.httpTimeout <= 0, c.httpIdle <= 0:
		return fmt.Errorf("-http-timeout and -http-idle-timeout must be > 0")
	case c.resumeMaxAge < 2*(c.resumeWindow+c.pingInterval):
		// A connection's token is renewed once half this old, at a ping:
		// after a drop it must still resume for the whole window.
		return fmt.Errorf("-resume-max-age must be at least twice -resume-window plus -ping (%v)", 2*(c.resumeWindow+c.pingInterval))
	}
	hosts, err := server.ParseHosts(c.hosts)
	if err != nil {
		return fmt.Errorf("-hosts: %v", err)
	}
	c.hostList = hosts
	if c.publicURL != "" {
		if _, err := server.PublicHost(c.publicURL); err != nil {
			return fmt.Errorf("-url: %v", err)
		}
	}
	p, err := server.ParseCIDRs(c.trustProxy)
	if err != nil {
		return fmt.Errorf("-trust-proxy: %v", err)
	}
	c.trustedProxies = p
	return nil
}

// budgets are the registry's budgets: the room budget flags (0 turns
// one off) and the default per-user one, all off with -rate 0.
func (c *config) budgets() room.Budgets {
	b := room.DefaultBudgets(c.limits)
	if c.limits.Rate <= 0 {
		return b
	}
	b.RoomMsgs, b.RoomEvents, b.RoomBytes, b.RoomJoins = c.roomRate, c.roomEvents, c.roomBytes, c.roomJoins
	return b
}

func (c *config) originList() []string {
	var out []string
	for _, o := range strings.Split(c.origins, ",") {
		if o = strings.TrimSpace(o); o != "" {
			out = append(out, o)
		}
	}
	return out
}
