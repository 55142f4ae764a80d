-- presence: a room's members across the cluster.
-- KEYS[1] the room's member hash (userID -> owner "\n" name), KEYS[2] its
-- order (userID scored by when it was listed, Unix ms). An entry lives as
-- long as its owner (a node) does: a node that dies is found by its
-- heartbeat (roster.go), and its entries are evicted then, not by a
-- lifetime of their own that would lapse while Redis is away (SPEC §8: an
-- outage of any length ends without a presence flicker).
-- ARGV[1] the operation, ARGV[2] now (ms), then the operation's arguments
-- (below). Each operation that lists returns {count, {userID, owner "\n"
-- name, …}} for at most max members.
local op, now = ARGV[1], ARGV[2]

-- list returns {count, {userID, value, …}}.
local function list(max)
  local count = redis.call("zcard", KEYS[2])
  local out = {}
  if max > 0 then
    local ids = redis.call("zrange", KEYS[2], 0, max - 1)
    if #ids > 0 then
      local vals = redis.call("hmget", KEYS[1], unpack(ids))
      for i, id in ipairs(ids) do
        if vals[i] then
          table.insert(out, id)
          table.insert(out, vals[i])
        end
      end
    end
  end
  return {count, out}
end

-- keep gives the room's two keys a lifetime of an hour: a node refreshes
-- them with its entries, and when no node does any more (every node that
-- had members there died, and none was left to evict them), they lapse
-- (SPEC §8: Redis memory is bounded by what was stored).
local function keep()
  redis.call("pexpire", KEYS[1], 3600000)
  redis.call("pexpire", KEYS[2], 3600000)
end

-- owned reports whether userID's entry belongs to owner (a node).
local function owned(id, owner)
  local v = redis.call("hget", KEYS[1], id)
  return v and string.sub(v, 1, #owner + 1) == owner .. "\n"
end

if op == "add" then
  -- ARGV[3] userID, ARGV[4] owner "\n" name, ARGV[5] max, ARGV[6] the
  -- room's capacity (0: none). Returns {count, members, {}, listed, full}:
  -- listed is 1 when the user was listed already (another node listed it,
  -- and it resumed here); full is 1 when the user was not listed and the
  -- room has capacity members already, cluster-wide: then nothing is
  -- written (SPEC §4 room_full, checked across the nodes in one step).
  local listed = redis.call("hexists", KEYS[1], ARGV[3])
  local capacity = tonumber(ARGV[6]) or 0
  if listed == 0 and capacity > 0 and redis.call("zcard", KEYS[2]) >= capacity then
    return {redis.call("zcard", KEYS[2]), {}, {}, 0, 1}
  end
  redis.call("hset", KEYS[1], ARGV[3], ARGV[4])
  redis.call("zadd", KEYS[2], "NX", now, ARGV[3])
  keep()
  local l = list(tonumber(ARGV[5]))
  return {l[1], l[2], {}, listed, 0}
elseif op == "remove" then
  -- ARGV[3] userID, ARGV[4] owner: only the node that added an entry
  -- removes it (the user may have moved to another node since).
  local removed = 0
  if owned(ARGV[3], ARGV[4]) then
    redis.call("hdel", KEYS[1], ARGV[3])
    redis.call("zrem", KEYS[2], ARGV[3])
    removed = 1
  end
  return {redis.call("zcard", KEYS[2]), removed}
elseif op == "refresh" then
  -- ARGV[3…] pairs of userID, owner "\n" name: assert the node's own
  -- entries, re-adding one that Redis lost (a FLUSHALL, a restart without
  -- persistence) or that was evicted while the node could not reach it,
  -- but not one another node holds now (the user moved there).
  for i = 3, #ARGV, 2 do
    local id, v = ARGV[i], ARGV[i + 1]
    local cur = redis.call("hget", KEYS[1], id)
    if not cur or cur == v then
      redis.call("hset", KEYS[1], id, v)
      redis.call("zadd", KEYS[2], "NX", now, id)
    end
  end
  keep()
  return redis.call("zcard", KEYS[2])
elseif op == "evict" then
  -- ARGV[3] owner, a node found dead: remove its entries and return
  -- {count, {userID, value, …}} of them. Each entry is removed once, so
  -- one node announces its leave.
  local flat = redis.call("hgetall", KEYS[1])
  local gone = {}
  local prefix = ARGV[3] .. "\n"
  for i = 1, #flat, 2 do
    if string.sub(flat[i + 1], 1, #prefix) == prefix then
      redis.call("hdel", KEYS[1], flat[i])
      redis.call("zrem", KEYS[2], flat[i])
      table.insert(gone, flat[i])
      table.insert(gone, flat[i + 1])
    end
  end
  return {redis.call("zcard", KEYS[2]), gone}
elseif op == "list" then
  -- ARGV[3] max. Read-only.
  return list(tonumber(ARGV[3]))
end
return redis.error_reply("presence: unknown operation " .. op)
