-- directory: a user's record, shared by every node (SPEC §8: resume on
-- any path). KEYS[1] the user's hash: t the newest resume token's issue
-- time (Unix ms), n the node that issued it, p the token t replaced and
-- pu (Unix ms) until when p still resumes, m the newest issue time the
-- record ever held. Only the node that issued the newest token sets the
-- record's lifetime, so a node the user left shortens nothing.
-- ARGV[1] the operation, ARGV[2] this node, ARGV[3] now (Unix ms), then
-- the operation's arguments (below).
local op, node, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local k = KEYS[1]

local function num(v)
  return tonumber(v or "0") or 0
end

if op == "online" then
  -- ARGV[4] issued, ARGV[5] lifetime (ms), ARGV[6] overlap (ms): the
  -- user has a connection here whose newest token was issued at issued;
  -- a newer token than the record's becomes the newest.
  local issued = tonumber(ARGV[4])
  local t = num(redis.call("hget", k, "t"))
  if issued > t then
    if t > 0 then
      redis.call("hset", k, "p", t, "pu", now + tonumber(ARGV[6]))
    end
    redis.call("hset", k, "t", issued, "n", node)
    t = issued
  end
  if issued == t and redis.call("hget", k, "n") == node then
    redis.call("pexpire", k, ARGV[5])
  end
  return 1
elseif op == "offline" then
  -- ARGV[4] lifetime (ms): the user's connection here ended.
  if redis.call("hget", k, "n") == node then
    redis.call("pexpire", k, ARGV[4])
  end
  return 1
elseif op == "resume" then
  -- ARGV[4] the token's issue time, ARGV[5] the new token's, ARGV[6]
  -- lifetime (ms), ARGV[7] overlap (ms), ARGV[8] the notice channel,
  -- ARGV[9] the userID, ARGV[10] the resume window (ms). Returns 0:
  -- unknown user, 1: refused, 2: resumed; a resume tells every node (the
  -- channel), so that the one holding an older connection closes it.
  -- The record also keeps m, the newest issue time it ever held, so that
  -- a token is "newer than the record" only if it is newer than every
  -- token the record knew of (nodes' clocks differ a little).
  local issued = tonumber(ARGV[4])
  local overlap = tonumber(ARGV[7])
  local hi = issued
  if redis.call("exists", k) == 0 then
    -- No record: the user dropped more than a window ago, or Redis lost
    -- the record (a failover to a replica that had not got it, a crash
    -- that lost the last writes). A token issued within the window
    -- belongs to a user whose drop is at most that old, so it is the
    -- latter: the record is written back with the token as the one the
    -- new token replaced.
    if now - issued > tonumber(ARGV[10]) then
      return 0
    end
    redis.call("hset", k, "p", issued, "pu", now + overlap)
  else
    local t, p, pu = num(redis.call("hget", k, "t")), num(redis.call("hget", k, "p")), num(redis.call("hget", k, "pu"))
    hi = math.max(t, p, num(redis.call("hget", k, "m")))
    if issued == t or issued > hi then
      -- The newest token, or one newer than any the record knows: the
      -- client's newest, whose write Redis lost (issued by a resume or a
      -- connect whose write a failover dropped), not a replay.
      redis.call("hset", k, "p", issued, "pu", now + overlap)
      hi = math.max(hi, issued)
    elseif not (issued == p and now < pu) then
      return 1
    end
    -- Using the replaced token again does not extend its overlap.
  end
  redis.call("hset", k, "t", ARGV[5], "n", node, "m", math.max(hi, tonumber(ARGV[5])))
  redis.call("pexpire", k, ARGV[6])
  redis.call("publish", ARGV[8], ARGV[9] .. "\n" .. ARGV[5] .. "\n" .. node)
  return 2
end
return redis.error_reply("directory: unknown operation " .. op)
