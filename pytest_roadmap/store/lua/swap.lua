-- Compare and set a value (no expiry); returns 1 if it was set. A retry after a lost
-- reply gets the first answer back instead of comparing again.
-- KEYS[1]: meta; KEYS[2]: the value's hash; KEYS[3]: this call's op key.
-- ARGV[1], ARGV[2]: the prelude's; ARGV[3]: 1 if the value must be unset, else 0;
-- ARGV[4]: the value expected otherwise; ARGV[5]: the new value; ARGV[6]: op key TTL (ms).
--! include prelude
local done = redis.call('GET', KEYS[3])
if done then return tonumber(done) end
local v = redis.call('HMGET', KEYS[2], 'v', 'e')
local current = v[1]
if current and v[2] and tonumber(v[2]) <= NOW then current = false end
local ok
if ARGV[3] == '1' then ok = not current else ok = current == ARGV[4] end
local answer = 0
if ok then
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[2], 'v', ARGV[5])
  touch(KEYS[2])
  answer = 1
end
redis.call('SET', KEYS[3], answer, 'PX', ARGV[6])
touch(KEYS[1])
return answer
