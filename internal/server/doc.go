// Package server is roomchat's transport (SPEC §3–§5): the HTTP routes, the
// /ws endpoint with each connection's read loop and on-demand writer, the
// per-connection rate limit, the connection and per-address limits and the
// HTTP timeouts (§4 "Rules and limits"), the Origin policy, the HTTP API,
// health, readiness and Prometheus metrics, and graceful shutdown.
//
// A connection costs one goroutine while idle (its read loop); its writer
// runs only while frames are queued. See docs/architecture.md for what an
// idle connection holds.
package server
