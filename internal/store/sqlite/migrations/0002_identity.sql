-- 0002: identity that outlives the process.
--
-- epoch is the store's own epoch: the epoch of every room that has no row
-- in rooms yet, and the one such a room's row gets with its first message,
-- so a room's epoch is the same before and after its first message and
-- changes only with the file (SPEC §4 joined.epoch). Rooms created before
-- this migration keep the epochs they have.
--
-- token_key is the secret resume tokens are signed with (hex of 32 random
-- bytes): tokens stay valid across restarts for as long as this file lives.
INSERT INTO meta (key, value) VALUES ('epoch', lower(hex(randomblob(8))));
INSERT INTO meta (key, value) VALUES ('token_key', lower(hex(randomblob(32))));
