-- Set a value. A value is a hash: v (the value) and e (when it expires, if it does).
-- Reads go by `e`, to the microsecond; Redis's own expiry, a moment later, only tidies up.
-- KEYS[1]: meta; KEYS[2]: the value's hash.
-- ARGV[1], ARGV[2]: the prelude's; ARGV[3]: value; ARGV[4]: ttl in seconds, or "".
--! include prelude
redis.call('DEL', KEYS[2])
if ARGV[4] == '' then
  redis.call('HSET', KEYS[2], 'v', ARGV[3])
  touch(KEYS[2])
else
  local ttl = tonumber(ARGV[4])
  redis.call('HSET', KEYS[2], 'v', ARGV[3], 'e', num(NOW + ttl))
  redis.call('PEXPIRE', KEYS[2], int(math.ceil(ttl * 1000) + 1))
end
touch(KEYS[1])
return 1
