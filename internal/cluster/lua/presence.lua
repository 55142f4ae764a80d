-- presence: a room's members across the cluster.
-- KEYS[1] the room's member hash (userID -> owner "\n" name), KEYS[2] its
-- expiry set (userID scored by the time, in Unix ms, its entry lapses
-- unless its node refreshes it). ARGV[1] the operation, ARGV[2] now (ms),
-- then the operation's arguments (below). Each operation that lists
-- returns {count, {userID, owner "\n" name, …}} for at most max live
-- members; add and sweep also return the entries they found lapsed.
local op, now = ARGV[1], ARGV[2]

-- sweep removes lapsed entries and returns them as {userID, value, …}.
local function sweep(except)
  local gone = redis.call("zrangebyscore", KEYS[2], "-inf", now)
  local left = {}
  for _, id in ipairs(gone) do
    local v = redis.call("hget", KEYS[1], id)
    redis.call("hdel", KEYS[1], id)
    redis.call("zrem", KEYS[2], id)
    if v and id ~= except then
      table.insert(left, id)
      table.insert(left, v)
    end
  end
  return left
end

-- list returns {count, {userID, value, …}} of the live entries.
local function list(max)
  local count = redis.call("zcount", KEYS[2], "(" .. now, "+inf")
  local ids = redis.call("zrangebyscore", KEYS[2], "(" .. now, "+inf", "LIMIT", 0, max)
  local out = {}
  if #ids > 0 then
    local vals = redis.call("hmget", KEYS[1], unpack(ids))
    for i, id in ipairs(ids) do
      if vals[i] then
        table.insert(out, id)
        table.insert(out, vals[i])
      end
    end
  end
  return {count, out}
end

-- keep gives the room's two keys a lifetime of an hour past the entry
-- expiry exp (Unix ms): a node refreshes them with its entries, and when
-- no node does any more (every node that had members there died), they
-- lapse instead of keeping lapsed entries for ever (SPEC §8: Redis memory
-- is bounded by what was stored).
local function keep(exp)
  local ttl = tonumber(exp) - tonumber(now) + 3600000
  redis.call("pexpire", KEYS[1], ttl)
  redis.call("pexpire", KEYS[2], ttl)
end

-- owned reports whether userID's entry belongs to owner (a node).
local function owned(id, owner)
  local v = redis.call("hget", KEYS[1], id)
  return v and string.sub(v, 1, #owner + 1) == owner .. "\n"
end

if op == "add" then
  -- ARGV[3] userID, ARGV[4] owner "\n" name, ARGV[5] expiry, ARGV[6] max
  local left = sweep(ARGV[3])
  local listed = redis.call("hexists", KEYS[1], ARGV[3])
  redis.call("hset", KEYS[1], ARGV[3], ARGV[4])
  redis.call("zadd", KEYS[2], ARGV[5], ARGV[3])
  keep(ARGV[5])
  local l = list(tonumber(ARGV[6]))
  return {l[1], l[2], left, listed}
elseif op == "remove" then
  -- ARGV[3] userID, ARGV[4] owner: only the node that added an entry
  -- removes it (the user may have moved to another node since).
  local removed = 0
  if owned(ARGV[3], ARGV[4]) then
    redis.call("hdel", KEYS[1], ARGV[3])
    redis.call("zrem", KEYS[2], ARGV[3])
    removed = 1
  end
  return {redis.call("zcount", KEYS[2], "(" .. now, "+inf"), removed}
elseif op == "refresh" then
  -- ARGV[3] owner, ARGV[4] expiry, ARGV[5…] userIDs: extend the node's
  -- own entries; re-add one that a sweep removed while the node was
  -- slow (value owner "\n" name in ARGV[5…] pairs).
  for i = 5, #ARGV, 2 do
    local id, v = ARGV[i], ARGV[i + 1]
    local cur = redis.call("hget", KEYS[1], id)
    if not cur or cur == v then
      redis.call("hset", KEYS[1], id, v)
      redis.call("zadd", KEYS[2], ARGV[4], id)
    end
  end
  keep(ARGV[4])
  return redis.call("zcount", KEYS[2], "(" .. now, "+inf")
elseif op == "sweep" then
  local left = sweep("")
  return {redis.call("zcount", KEYS[2], "(" .. now, "+inf"), left}
elseif op == "list" then
  -- ARGV[3] max. Read-only: lapsed entries are skipped, not removed.
  return list(tonumber(ARGV[3]))
end
return redis.error_reply("presence: unknown operation " .. op)
