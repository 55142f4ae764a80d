-- prune: delete bans or mutes that have ended from a room's hash (SPEC
-- §11), found so by a read. KEYS[1] the hash (user ID to "untilMs\nJSON";
-- untilMs 0: until lifted). ARGV[1] the reader's time in Unix ms, ARGV[2]
-- on the user IDs the reader found ended. Each is checked again here, so
-- that one replaced since the read (a new ban) is kept.
-- Returns how many were deleted.
local n = 0
for i = 2, #ARGV do
  local v = redis.call("hget", KEYS[1], ARGV[i])
  if v then
    local untilMs = tonumber(string.match(v, "^(%d+)\n"))
    if untilMs and untilMs ~= 0 and untilMs <= tonumber(ARGV[1]) then
      n = n + redis.call("hdel", KEYS[1], ARGV[i])
    end
  end
end
return n
