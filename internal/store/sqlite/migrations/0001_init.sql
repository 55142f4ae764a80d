-- 0001: roomchat's first schema. Applied in one transaction by Open; the
-- file's number is the schema version it brings the database to
-- (PRAGMA user_version).

-- meta marks the file as a roomchat database (besides PRAGMA
-- application_id) and holds small key/value facts such as Ready's probe.
CREATE TABLE meta (
	key   TEXT PRIMARY KEY,
	value TEXT NOT NULL
) STRICT;
INSERT INTO meta (key, value) VALUES ('application', 'roomchat');

-- rooms holds one row per room that ever had a message. id is the short
-- integer key messages refer to, so a 64-character room ID is stored once.
-- last_seq is the seq of the room's last committed message; epoch names
-- this incarnation of its history (SPEC §4 joined.epoch).
CREATE TABLE rooms (
	id         INTEGER PRIMARY KEY,
	room_id    TEXT    NOT NULL UNIQUE,
	last_seq   INTEGER NOT NULL,
	epoch      TEXT    NOT NULL,
	created_ms INTEGER NOT NULL
) STRICT;

-- messages holds every retained message. ts is Unix milliseconds (UTC).
CREATE TABLE messages (
	room    INTEGER NOT NULL,
	seq     INTEGER NOT NULL,
	id      TEXT    NOT NULL,
	user_id TEXT    NOT NULL,
	name    TEXT    NOT NULL,
	body    TEXT    NOT NULL,
	ts      INTEGER NOT NULL
) STRICT;
-- Every read is a range of one room's seqs; so is every trim.
CREATE UNIQUE INDEX messages_room_seq ON messages (room, seq);

-- dedup keeps (user, client id) keys for store.DedupWindow, written in the
-- same transaction as their message. at is the store's clock in Unix
-- milliseconds when the key was stored. Rows are inserted in time order, so
-- the sweep deletes expired keys from the low end of rowid order without an
-- index on at.
CREATE TABLE dedup (
	key    TEXT    PRIMARY KEY,
	room   INTEGER NOT NULL,
	seq    INTEGER NOT NULL,
	msg_id TEXT    NOT NULL,
	at     INTEGER NOT NULL
) STRICT;
