-- Add to the integer value (0 if unset); returns {1, result} or {0, the value that is
-- no integer}.
-- KEYS[1]: meta; KEYS[2]: the value's hash; KEYS[3]: this call's op key.
-- ARGV[1], ARGV[2]: the prelude's; ARGV[3]: amount; ARGV[4]: op key TTL (ms), or 0 when
-- a repeat does no harm.
--! include prelude
local dedup = ARGV[4] ~= '0'
if dedup then
  local done = redis.call('GET', KEYS[3])
  if done then return {1, done} end
end
local v = redis.call('HMGET', KEYS[2], 'v', 'e')
local current, expires = v[1], v[2]
if not current or (expires and tonumber(expires) <= NOW) then
  current, expires = '0', false
  redis.call('DEL', KEYS[2])
end
if not string.match(current, '^%s*[-+]?%d+%s*$') then return {0, current} end
local result = int(tonumber(current) + tonumber(ARGV[3]))
redis.call('HSET', KEYS[2], 'v', result)
-- Like INCR: an expiry of the value's own stays; otherwise the run's TTL starts again.
if not expires then touch(KEYS[2]) end
if dedup then redis.call('SET', KEYS[3], result, 'PX', ARGV[4]) end
touch(KEYS[1])
return {1, result}
