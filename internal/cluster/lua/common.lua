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

-- touch gives a room's keys (its meta hash and stream) their idle
-- lifetime of idle ms again once half of it has run out, so that a busy
-- room costs a write for it only now and then; a key without one gets it.
local function touch(meta, stream, idle)
  for _, key in ipairs({meta, stream}) do
    local left = redis.call("pttl", key)
    if left ~= -2 and left < idle / 2 then
      redis.call("pexpire", key, idle)
    end
  end
end

