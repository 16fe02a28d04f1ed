-- How many live tickets of a gate hold and wait; returns {holding, waiting}.
-- KEYS[1]: meta; KEYS[2]: the gate's hash.
-- ARGV[1], ARGV[2]: the prelude's.
--! include prelude
--! include gate
local held, waiting = 0, 0
for _, t in ipairs(live(false)) do
  if t.holding then held = held + 1 else waiting = waiting + 1 end
end
return {held, waiting}
