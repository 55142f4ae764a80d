// Package cluster is roomchat across machines (SPEC §8): the Redis-backed
// implementations of the seams a single node fills in memory or in SQLite,
// so that any number of nodes behind any load balancer share rooms,
// sequence numbers, de-duplication, resume tokens, presence and history.
//
//   - Store is store.Store on Redis: a room's stream, meta,
//     de-duplication keys and moderation state (bans, mutes, post rule)
//     under one hash tag; the mute check, the seq, the XADD and the
//     PUBLISH of a message are one Lua script (lua/publish.lua), and an
//     append that timed out is never stored later.
//   - Broker is broker.Broker on Redis: it publishes through the Store and
//     delivers each room's messages to this node in seq order with no gap
//     and no duplicate, filling what pub/sub dropped from the stream.
//   - Directory is room.Directory on Redis: a resume token works on every
//     node within the resume window.
//   - Roster is room.Roster on Redis: each room's members across the
//     cluster, with the leaves of a dead node's members announced within
//     SPEC §8's 30 s.
//
// The Lua scripts live in lua/ beside the code that runs them. A Redis that
// is unreachable or hangs turns every request into store_unavailable
// within 5 s, and an empty or rewound Redis rotates each room's epoch.
package cluster
