-- page: a room's info and a range of its messages from one snapshot. It
-- writes nothing (SPEC §8: reads never write): a room without a meta hash
-- reads as empty, with the store's epoch.
-- KEYS[1] the room's stream, KEYS[2] its meta hash, KEYS[3] its
-- tombstones (redacted messages, merged back in seq order).
-- ARGV[1] the epoch of a room that has none (the store's), ARGV[2] the
-- lowest seq wanted, ARGV[3] the highest ("+" for no bound), ARGV[4] the
-- most entries ("0" for no limit), ARGV[5] "1" for the newest of the
-- range, ARGV[6] "0" to read the info only, ARGV[7] the most messages
-- retention keeps (the stream is trimmed approximately, by whole nodes, so
-- reads cut it exactly), ARGV[8] and ARGV[9] the age cutoff (YYYYMMDD,
-- HHMMSSmmm; "" for no age retention): writes trim what is older in
-- batches, reads skip it exactly.
-- Returns {epoch, lastSeq, firstSeq, entries, the message ID at lastSeq or
-- ""}: a reader is told of lastSeq, and the node that serves it compares
-- that ID with what it delivers at lastSeq later (broker.go, served).
local meta = redis.call("hmget", KEYS[2], "e", "s")
local epoch, last = meta[1], tonumber(meta[2] or "0")
if not epoch then
  return {ARGV[1], 0, 0, {}, ""}
end
local first = 0
if last > 0 then
  local head = headOf(KEYS[1], KEYS[3])
  if head then
    first = math.max(head, last - tonumber(ARGV[7]) + 1)
    if ARGV[8] ~= "" then
      first = firstYoung(KEYS[1], first, last, {tonumber(ARGV[8]), tonumber(ARGV[9])})
    end
  else
    first = last + 1 -- retention dropped every message
  end
end
local entries = {}
if ARGV[6] ~= "0" and last > 0 and first <= last then
  local lo, hi = ARGV[2], ARGV[3]
  if tonumber(lo) < first then
    lo = string.format("%d", first)
  end
  local count = {}
  if ARGV[4] ~= "0" then
    count = {"COUNT", ARGV[4]}
  end
  local rev = ARGV[5] == "1"
  if rev then
    entries = redis.call("xrevrange", KEYS[1], hi, lo, unpack(count))
  else
    entries = redis.call("xrange", KEYS[1], lo, hi, unpack(count))
  end
  -- Tombstones of the range, in the same order, merged in: the first
  -- COUNT of the two lists are the first COUNT of the range.
  local zhi = hi == "+" and "+inf" or hi
  local limit = {}
  if ARGV[4] ~= "0" then
    limit = {"LIMIT", 0, ARGV[4]}
  end
  local tombs
  if rev then
    tombs = redis.call("zrevrangebyscore", KEYS[3], zhi, lo, "WITHSCORES", unpack(limit))
  else
    tombs = redis.call("zrangebyscore", KEYS[3], lo, zhi, "WITHSCORES", unpack(limit))
  end
  if #tombs > 0 then
    local merged, i, j = {}, 1, 1
    local n = tonumber(ARGV[4])
    while (n == 0 or #merged < n) and (i <= #entries or j < #tombs) do
      local ts = tombs[j + 1] and tonumber(tombs[j + 1])
      local es = entries[i] and seqOf(entries[i])
      local takeTomb = ts and (not es or (rev and ts > es) or (not rev and ts < es))
      if takeTomb then
        table.insert(merged, {string.format("%d-0", ts), {"m", tombs[j]}})
        j = j + 2
      else
        table.insert(merged, entries[i])
        i = i + 1
      end
    end
    entries = merged
  end
end
local lastID = ""
if last > 0 then
  local e = entryAt(KEYS[1], last)
  if e then
    lastID = idOf(e)
  end
end
return {epoch, last, first, entries, lastID}
