-- page: a room's info and a range of its messages from one snapshot.
-- KEYS[1] the room's stream, KEYS[2] its meta hash.
-- ARGV[1] an epoch for a room that has none, ARGV[2] the lowest seq
-- wanted, ARGV[3] the highest ("+" for no bound), ARGV[4] the most
-- entries ("0" for no limit), ARGV[5] "1" for the newest of the range,
-- ARGV[6] "0" to read the info only, ARGV[7] the lifetime in seconds of
-- the meta of a room that has no message yet, ARGV[8] the most messages
-- retention keeps: the stream is trimmed approximately (whole nodes), so
-- reads cut it exactly.
-- Returns {epoch, lastSeq, firstSeq, entries}.
local meta = redis.call("hmget", KEYS[2], "e", "s")
local epoch, last = meta[1], tonumber(meta[2] or "0")
if not epoch then
  -- A room's epoch is fixed at its first join: created here, it lives
  -- ARGV[7] seconds unless a message makes it permanent (publish.lua).
  epoch = ARGV[1]
  redis.call("hset", KEYS[2], "e", epoch)
  redis.call("expire", KEYS[2], ARGV[7])
end
local first = 0
local head = redis.call("xrange", KEYS[1], "-", "+", "COUNT", 1)
if #head > 0 then
  first = math.max(tonumber(string.match(head[1][1], "^(%d+)")), last - tonumber(ARGV[8]) + 1)
end
local entries = {}
if ARGV[6] ~= "0" and last > 0 then
  local lo, hi = math.max(tonumber(ARGV[2]), first), ARGV[3]
  if ARGV[5] == "1" then
    if ARGV[4] == "0" then
      entries = redis.call("xrevrange", KEYS[1], hi, lo)
    else
      entries = redis.call("xrevrange", KEYS[1], hi, lo, "COUNT", ARGV[4])
    end
  else
    if ARGV[4] == "0" then
      entries = redis.call("xrange", KEYS[1], lo, hi)
    else
      entries = redis.call("xrange", KEYS[1], lo, hi, "COUNT", ARGV[4])
    end
  end
end
return {epoch, last, first, entries}
