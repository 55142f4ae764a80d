-- publish: one message of one room, in one atomic step (SPEC §8).
-- KEYS[1] the room's stream, KEYS[2] its meta hash, KEYS[3] the
-- de-duplication key (ignored when ARGV[6] is "0"), KEYS[4] the room's
-- tombstones (a sorted set of redacted messages, scored by seq), KEYS[5]
-- its mutes (a hash: user ID to "untilMs\nJSON", untilMs 0 for no end),
-- KEYS[6] its bans and KEYS[7] its post rule, whose lifetimes a write
-- starts again with the others' (touch).
-- ARGV[1] the message JSON (its seq is set by the reader from the entry),
-- ARGV[2] the stream's approximate MAXLEN ("0": the room keeps no message,
-- and the stream is deleted), ARGV[3] the room's pub/sub
-- channel, ARGV[4] the epoch of a room that has none (the store's),
-- ARGV[5] the de-duplication key's lifetime in seconds, ARGV[6] "1" when
-- there is a key, ARGV[7] the message's ID, ARGV[8] the time, in Unix ms
-- of Redis's clock, past which the request is refused unstored (its
-- sender has given up on it by then), ARGV[9] the room's idle lifetime in
-- ms, ARGV[10] and ARGV[11] the age cutoff (YYYYMMDD, HHMMSSmmm; "" for
-- no age retention) and ARGV[12] and ARGV[13] the age at which trimming
-- starts (a little past the cutoff, so that it runs in batches), ARGV[14]
-- the seq the message redacts ("0": it is not a redaction), ARGV[15] the
-- sender's user ID ("": none, never muted), ARGV[16] "1" when the sender's
-- role is below moderator (its message is refused while KEYS[7] is
-- "moderators"), ARGV[17] Redis's stream-node-max-entries ("0": not
-- known), which bounds what a redaction writes again.
-- Returns {1, seq, epoch} for a new message, {0, seq, ID, JSON or false}
-- for a retry (the JSON while the stream still holds the original), {-1}
-- for a request past its time, {-2, untilMs} for a message of a user
-- muted in the room at Redis's clock (SPEC §11), {-3} for a message of a
-- member while the room's post rule is "moderators": nothing is stored
-- and no seq is taken.
local now = redis.call("time")
local nowMs = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
if nowMs > tonumber(ARGV[8]) then
  return {-1}
end
if ARGV[6] == "1" then
  local prior = redis.call("get", KEYS[3])
  if prior then
    -- "seq\nID"; before IDs, "seq\nJSON": the reader takes either.
    local seq, id = string.match(prior, "^(%d+)\n(.*)$")
    if seq then
      local body = false
      local e = entryAt(KEYS[1], tonumber(seq)) or tombAt(KEYS[4], tonumber(seq))
      if e and idOf(e) == id then
        body = e[2][2]
      end
      return {0, tonumber(seq), id, body}
    end
  end
end
if ARGV[15] ~= "" and ARGV[14] == "0" then
  -- One field lookup: a room without mutes has no hash to look in.
  local mute = redis.call("hget", KEYS[5], ARGV[15])
  if mute then
    local untilMs = tonumber(string.match(mute, "^(%d+)\n"))
    if untilMs and (untilMs == 0 or nowMs < untilMs) then
      return {-2, untilMs}
    end
  end
end
if ARGV[16] == "1" and ARGV[14] == "0" and redis.call("get", KEYS[7]) == "moderators" then
  return {-3}
end
local epoch = redis.call("hget", KEYS[2], "e")
if not epoch then
  epoch = ARGV[4]
  redis.call("hset", KEYS[2], "e", epoch)
end
local seq = redis.call("hincrby", KEYS[2], "s", 1)
if seq == 1 then
  -- A new epoch starts: a stream left without its meta is of a lost one.
  redis.call("del", KEYS[1])
end
local keep = ARGV[2] ~= "0"
if keep then
  redis.call("xadd", KEYS[1], "MAXLEN", "~", ARGV[2], string.format("%d-0", seq), "m", ARGV[1])
  if seq == 1 then
    redis.call("pexpire", KEYS[1], ARGV[9])
  end
else
  redis.call("del", KEYS[1])
end
if keep and ARGV[14] ~= "0" then
  -- A redaction (SPEC §11): the target's entry cannot be edited in place,
  -- so it is removed, and its tombstone (the message without its text,
  -- and who redacted it with which seq) goes to KEYS[4], where reads
  -- merge it back in seq order. A target that is gone or already a
  -- tombstone is left as it is.
  local target = tonumber(ARGV[14])
  local e = target < seq and entryAt(KEYS[1], target)
  if e then
    local o = cjson.decode(e[2][2])
    local by = cjson.decode(ARGV[1]).from
    local tomb = '{"id":' .. cjson.encode(o.id) .. ',"roomID":' .. cjson.encode(o.roomID) ..
      ',"seq":0,"from":' .. cjson.encode(o.from) .. ',"message":""'
    if o.redacts then
      tomb = tomb .. ',"redacts":' .. string.format("%d", o.redacts)
    end
    tomb = tomb .. ',"redacted":{"by":' .. cjson.encode(by) .. ',"seq":' .. string.format("%d", seq) ..
      '},"ts":' .. cjson.encode(o.ts) .. '}'
    redis.call("zadd", KEYS[4], target, tomb)
    -- XDEL only flags an entry: its bytes stay in the stream's node
    -- (and in DUMP, RDB and replicas) until the whole node goes. A node
    -- holds at most ARGV[17] entries (stream-node-max-entries), so the
    -- entries from the ARGV[17] - 1 before the target on are deleted,
    -- which empties and frees the target's node, and the others among
    -- them are added again: O(ARGV[17] + entries after the target), a
    -- handful for a recent message. With ARGV[17] "0" (not known) the
    -- whole stream is written again.
    local span = tonumber(ARGV[17])
    local start = "-"
    if span > 0 then
      local before = redis.call("xrevrange", KEYS[1], "(" .. e[1], "-", "count", span - 1)
      start = before[#before] and before[#before][1] or e[1]
    end
    local tail = redis.call("xrange", KEYS[1], start, "+")
    local ttl = redis.call("pttl", KEYS[1])
    if start == "-" then
      redis.call("del", KEYS[1])
    else
      for i = 1, #tail, 1000 do
        local ids = {}
        for j = i, math.min(i + 999, #tail) do
          ids[#ids + 1] = tail[j][1]
        end
        redis.call("xdel", KEYS[1], unpack(ids))
      end
      -- New entries may take IDs from the deleted ones' again.
      local top = redis.call("xrevrange", KEYS[1], "+", "-", "count", 1)
      redis.call("xsetid", KEYS[1], top[1] and top[1][1] or "0-0")
    end
    for _, x in ipairs(tail) do
      if x[1] ~= e[1] then
        redis.call("xadd", KEYS[1], x[1], unpack(x[2]))
      end
    end
    if ttl > 0 then
      redis.call("pexpire", KEYS[1], ttl)
    end
    if redis.call("pttl", KEYS[4]) < 0 then
      redis.call("pexpire", KEYS[4], ARGV[9])
    end
    -- Tombstones past the count retention go with the stream's entries.
    redis.call("zremrangebyscore", KEYS[4], "-inf", string.format("(%d", seq - tonumber(ARGV[2]) + 1))
  end
end
if not keep then
  redis.call("del", KEYS[4])
end
if keep and ARGV[10] ~= "" then
  local head = entryFrom(KEYS[1], 0)
  if head and old(head, {tonumber(ARGV[12]), tonumber(ARGV[13])}) then
    local keep = firstYoung(KEYS[1], seqOf(head), seq, {tonumber(ARGV[10]), tonumber(ARGV[11])})
    redis.call("xtrim", KEYS[1], "MINID", string.format("%d-0", keep))
    redis.call("zremrangebyscore", KEYS[4], "-inf", string.format("(%d", keep))
  end
end
touch(KEYS[2], KEYS[1], tonumber(ARGV[9]), KEYS[4], KEYS[5], KEYS[6], KEYS[7])
redis.call("publish", ARGV[3], seq .. "\n" .. epoch .. "\n" .. ARGV[1])
if ARGV[6] == "1" then
  redis.call("set", KEYS[3], seq .. "\n" .. ARGV[7], "EX", ARGV[5])
end
return {1, seq, epoch}
