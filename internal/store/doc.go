// Package store defines roomchat's history contract (SPEC §4 "Guarantees"):
// a store assigns each room's sequence numbers, keeps messages durably,
// replays them by seq, pages through them, de-duplicates retried sends,
// enforces retention and keeps each room's moderation state (bans, mutes,
// the post rule: SPEC §11). Memory is the in-process implementation used for
// tests and for -db :memory:; store/sqlite is the default durable one; every
// implementation passes the conformance suites in store/storetest (Run
// and RunModeration).
package store
