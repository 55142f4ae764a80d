-- restrict: set one user's ban or mute in a room (SPEC §11), replacing an
-- earlier one, and give the room's hash of that kind its idle lifetime.
-- KEYS[1] the hash (user ID to "untilMs\nJSON"; untilMs 0: until lifted).
-- ARGV[1] the user ID, ARGV[2] the value, ARGV[3] the room's idle lifetime
-- in ms. Entries that have ended stay until a read meets them (prune.lua)
-- or they are replaced or lifted: every read, and publish.lua's mute
-- check, skips them.
redis.call("hset", KEYS[1], ARGV[1], ARGV[2])
redis.call("pexpire", KEYS[1], ARGV[3])
return 1
