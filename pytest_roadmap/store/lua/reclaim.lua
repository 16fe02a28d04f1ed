-- Drop every live ticket of a holder; returns how many.
-- KEYS[1]: meta; KEYS[2]: the gate's hash.
-- ARGV[1], ARGV[2]: the prelude's; ARGV[3]: holder.
--! include prelude
--! include gate
local n = 0
for _, t in ipairs(live(true)) do
  if t.who == ARGV[3] then
    redis.call('HDEL', KEYS[2], t.field)
    n = n + 1
  end
end
return n
