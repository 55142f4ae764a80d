-- page: a room's info and a range of its messages from one snapshot. It
-- writes nothing (SPEC §8: reads never write): a room without a meta hash
-- reads as empty, with the store's epoch.
-- KEYS[1] the room's stream, KEYS[2] its meta hash.
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
  local head = entryFrom(KEYS[1], 0)
  if head then
    first = math.max(seqOf(head), last - tonumber(ARGV[7]) + 1)
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
  if ARGV[5] == "1" then
    entries = redis.call("xrevrange", KEYS[1], hi, lo, unpack(count))
  else
    entries = redis.call("xrange", KEYS[1], lo, hi, unpack(count))
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
