-- 0004: moderation (SPEC §11). restrictions holds each ban and mute of a
-- user in a room: until_ms is when it ends (Unix ms; 0: until lifted),
-- by_id and by_name who set it, at_ms when (0: not given). Expiries are
-- enforced on read: a row past its end stays until it is replaced or
-- lifted, and reads skip it. post_rules holds a room's run-time post rule
-- (SPEC §11 configure); a room without a row has none.
CREATE TABLE restrictions (
	room_id  TEXT    NOT NULL,
	kind     TEXT    NOT NULL,
	user_id  TEXT    NOT NULL,
	until_ms INTEGER NOT NULL,
	by_id    TEXT    NOT NULL,
	by_name  TEXT    NOT NULL,
	reason   TEXT    NOT NULL,
	at_ms    INTEGER NOT NULL,
	PRIMARY KEY (room_id, kind, user_id)
) STRICT, WITHOUT ROWID;

CREATE TABLE post_rules (
	room_id TEXT PRIMARY KEY,
	rule    TEXT NOT NULL
) STRICT, WITHOUT ROWID;
