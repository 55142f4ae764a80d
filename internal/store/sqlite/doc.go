// Package sqlite is roomchat's default durable store (SPEC §4
// "Guarantees", §3 -db): a store.Store kept in one SQLite file, through the
// pure-Go modernc.org/sqlite driver, so that the server builds without cgo.
//
// The file is in WAL mode with synchronous=FULL: an Append's done reports
// success only after its transaction is committed and fsynced, so an acked
// message survives kill -9 and power loss. Its schema is versioned
// (PRAGMA user_version), migrated at Open from the SQL files embedded from
// migrations/, and marked as roomchat's (PRAGMA application_id and a meta
// row), so that Open refuses any other file. One Store at a time has a
// file open: Open holds an exclusive flock on the file beside it, path +
// "-lock", until Close, and refuses a database that another Store, in any
// process, holds (ErrLocked).
//
// Writes go through one committer goroutine (group commit): Append only
// queues; the committer takes everything queued, assigns each room's seqs,
// writes the messages and their de-duplication keys in one transaction,
// commits and then calls each done in seq order. Moderation writes (bans,
// mutes, the post rule: SPEC §11) go through it too, ordered with the
// messages, and it refuses a muted user's message in the transaction that
// would store it, from a copy of the mutes it changes only once a commit
// has succeeded. Retention and the sweep
// of expired de-duplication keys run in small bounded steps between
// commits, off the commit path. Reads use their own pool of connections and
// never wait for the committer. docs/storage.md explains the choices and
// has the measured numbers.
package sqlite
