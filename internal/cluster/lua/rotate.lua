-- rotate: give a room a new epoch, if it still has the one a node saw
-- go wrong (Redis lost acknowledged writes: its seq went backwards, or
-- the message at a seq the node delivered is another one).
-- KEYS[1] the room's meta hash. ARGV[1] the epoch seen, ARGV[2] the new one.
-- Returns the room's epoch after.
local epoch = redis.call("hget", KEYS[1], "e")
if epoch == ARGV[1] then
  redis.call("hset", KEYS[1], "e", ARGV[2])
  return ARGV[2]
end
return epoch
