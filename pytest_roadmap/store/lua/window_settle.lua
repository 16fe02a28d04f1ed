-- Set the amount of an entry of a sliding log; returns 1, or 0 if the entry is gone.
-- KEYS[1]: meta; KEYS[2]: the log's hash (see window_reserve.lua).
-- ARGV[1], ARGV[2]: the prelude's; ARGV[3]: entry id; ARGV[4]: amount.
--! include prelude
local v = redis.call('HGET', KEYS[2], ARGV[3])
if not v then return 0 end
local at = string.match(v, '^([^|]*)|')
redis.call('HSET', KEYS[2], ARGV[3], at .. '|' .. ARGV[4])
touch(KEYS[2])
touch(KEYS[1])
return 1
