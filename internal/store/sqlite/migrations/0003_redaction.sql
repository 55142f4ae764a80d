-- 0003: redaction (SPEC §11). A message with redacts > 0 is a redaction
-- of the room's message with that seq; the redacted message keeps its row,
-- with its body emptied and redacted_seq, redacted_by and redacted_name
-- naming the redaction and who made it (NULL while not redacted). The
-- writer's connection runs with secure_delete on, so the text an UPDATE
-- or DELETE removes is overwritten in the file, not left in a free slot.
ALTER TABLE messages ADD COLUMN redacts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN redacted_seq INTEGER;
ALTER TABLE messages ADD COLUMN redacted_by TEXT;
ALTER TABLE messages ADD COLUMN redacted_name TEXT;
