-- Extend the lease of a live ticket; returns 1, or 0 if it is gone.
-- KEYS[1]: meta; KEYS[2]: the gate's hash; KEYS[3]: the ticket counter.
-- ARGV[1], ARGV[2]: the prelude's; ARGV[3]: ticket; ARGV[4]: lease (s);
-- ARGV[5]: known ("<holding>|<holder>" or "").
--! include prelude
--! include gate
local v = redis.call('HGET', KEYS[2], ARGV[3])
if v then
  local holding, expires, who = decode(v)
  if expires <= NOW or (ARGV[5] ~= '' and who ~= known_holder(ARGV[5])) then return 0 end
  redis.call('HSET', KEYS[2], ARGV[3], encode(holding, NOW + tonumber(ARGV[4]), who))
elseif RECOVERING and ARGV[5] ~= '' then
  restore(ARGV[3], ARGV[5], tonumber(ARGV[4]))
else
  return 0
end
touch(KEYS[2])
touch(KEYS[1])
return 1
