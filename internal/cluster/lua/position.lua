-- position: where a room stands, for a node that delivers its messages.
-- KEYS[1] the room's stream, KEYS[2] its meta hash, KEYS[3] its
-- tombstones (a redacted message keeps its ID there), KEYS[4] and on the
-- room's other keys (mutes, bans, post rule), whose lifetime a join
-- starts again with the others.
-- ARGV[1] "1" when a member joins: a room without a meta hash gets one,
-- with epoch ARGV[2] (the join fixes the room's epoch); "0" for a check,
-- which creates nothing. ARGV[3] the seq whose message ID to return ("0":
-- the last one), ARGV[4] the room's idle lifetime in ms: a room with
-- members keeps its keys (touch).
-- Returns {epoch or false, lastSeq, ID at the seq or "", first seq the
-- stream holds or 0}.
local meta = redis.call("hmget", KEYS[2], "e", "s")
local epoch, last = meta[1], tonumber(meta[2] or "0")
if not epoch then
  if ARGV[1] ~= "1" then
    return {false, 0, "", 0}
  end
  epoch = ARGV[2]
  redis.call("hset", KEYS[2], "e", epoch)
end
touch(KEYS[2], KEYS[1], tonumber(ARGV[4]), unpack(KEYS, 3))
local at = tonumber(ARGV[3])
if at == 0 then
  at = last
end
local id = ""
if at > 0 then
  local e = entryAt(KEYS[1], at) or tombAt(KEYS[3], at)
  if e then
    id = idOf(e)
  end
end
return {epoch, last, id, headOf(KEYS[1], KEYS[3]) or 0}
