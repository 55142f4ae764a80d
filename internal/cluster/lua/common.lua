-- common: helpers that the scripts below begin with (store.go prepends
-- this file to each of them).

-- seqOf returns the seq of a stream entry ({id, {field, value}}).
local function seqOf(e)
  return tonumber(string.match(e[1], "^(%d+)"))
end

-- idOf returns the message ID of a stream entry: its JSON starts with it.
local function idOf(e)
  return string.match(e[2][2], '^{"id":"([^"]*)"') or ""
end

-- entryFrom returns the first entry of stream key at or after seq, or nil.
local function entryFrom(key, seq)
  local r = redis.call("xrange", key, string.format("%d", seq), "+", "COUNT", 1)
  return r[1]
end

-- entryAt returns the entry of stream key at seq, or nil.
local function entryAt(key, seq)
  local id = string.format("%d-0", seq)
  local r = redis.call("xrange", key, id, id)
  return r[1]
end

-- old reports whether entry e was sent before the cutoff {day, time}:
-- its "ts" is RFC 3339 in UTC with milliseconds, its JSON's last field,
-- compared as YYYYMMDD and HHMMSSmmm (each exact in a Lua number). An
-- entry whose ts cannot be read is kept.
local function old(e, cutoff)
  local y, mo, d, h, mi, s, ms = string.match(e[2][2],
    '"ts":"(%d%d%d%d)%-(%d%d)%-(%d%d)T(%d%d):(%d%d):(%d%d)%.(%d%d%d)Z"}$')
  if not y then
    return false
  end
  local day, time = tonumber(y .. mo .. d), tonumber(h .. mi .. s .. ms)
  return day < cutoff[1] or (day == cutoff[1] and time < cutoff[2])
end

-- firstYoung returns the seq of the first entry of stream key from seq
-- from on that is not older than cutoff, or last + 1 if there is none:
-- a gallop then a bisection over seqs, one XRANGE of one entry per step,
-- so a room's whole retained history costs some 30 reads, and the usual
-- case, a few messages past the age, two or three.
local function firstYoung(key, from, last, cutoff)
  -- young(x): the first entry at or after seq x is young, or there is none.
  local function young(x)
    local e = entryFrom(key, x)
    return e == nil or not old(e, cutoff), e
  end
  local ok, e = young(from)
  if ok then
    return e and seqOf(e) or last + 1
  end
  local lo, step, hi = seqOf(e), 1, last + 1 -- young(lo) is false
  while lo + step <= last do
    local x = lo + step
    ok, e = young(x)
    if ok then
      hi = x
      break
    end
    lo, step = seqOf(e), step * 2
  end
  while hi - lo > 1 do
    local mid = math.floor((lo + hi) / 2)
    ok, e = young(mid)
    if ok then
      hi = mid
    else
      lo = seqOf(e)
    end
  end
  e = entryFrom(key, hi)
  return e and seqOf(e) or last + 1
end

-- touch gives a room's keys (its meta hash, stream and the others named
-- after idle: tombstones, bans, mutes, post rule) their idle lifetime of
-- idle ms again once half of the meta's has run out, so that a busy room
-- costs a write for it only now and then; a meta without one gets it.
-- (The stream, created by a room's first message, gets its own then:
-- publish.lua; the others get theirs when they are written.)
local function touch(meta, stream, idle, ...)
  local left = redis.call("pttl", meta)
  if left ~= -2 and left < idle / 2 then
    redis.call("pexpire", meta, idle)
    redis.call("pexpire", stream, idle)
    for _, k in ipairs({...}) do
      redis.call("pexpire", k, idle)
    end
  end
end

-- tombAt returns the tombstone of seq in sorted set key, as an entry
-- ({id, {"m", JSON}}), or nil.
local function tombAt(key, seq)
  local r = redis.call("zrangebyscore", key, seq, seq)
  if r[1] then
    return {string.format("%d-0", seq), {"m", r[1]}}
  end
  return nil
end

-- headOf returns the first seq a room stores, in its stream or among its
-- tombstones, or nil when it stores none.
local function headOf(stream, tombs)
  local e = entryFrom(stream, 0)
  local head = e and seqOf(e)
  local t = redis.call("zrange", tombs, 0, 0, "WITHSCORES")
  if t[2] then
    local ts = tonumber(t[2])
    if not head or ts < head then
      head = ts
    end
  end
  return head
end
