-- A value, or nil if it is unset or expired (see put.lua for its layout).
-- KEYS[1]: meta; KEYS[2]: the value's hash.
-- ARGV[1], ARGV[2]: the prelude's.
--! include prelude
local v = redis.call('HMGET', KEYS[2], 'v', 'e')
if not v[1] or (v[2] and tonumber(v[2]) <= NOW) then return false end
return v[1]
