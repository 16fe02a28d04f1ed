-- Turn a ticket into a holder if it is its turn and there is room; returns 1 holding,
-- 0 waiting, -1 gone.
-- KEYS[1]: meta; KEYS[2]: the gate's hash; KEYS[3]: the ticket counter;
-- KEYS[4]: the limit hash.
-- ARGV[1], ARGV[2]: the prelude's; ARGV[3]: gate key; ARGV[4]: ticket; ARGV[5]: lease (s);
-- ARGV[6]: known ("<holding>|<holder>" or ""); ARGV[7]: limit hint, or "".
--! include prelude
--! include gate
--! include limit_of
local ticket, lease, known = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
local tickets = live(true)
local mine
for _, t in ipairs(tickets) do
  if t.ticket == ticket then mine = t end
end
if mine then
  if known ~= '' and mine.who ~= known_holder(known) then return -1 end
elseif RECOVERING and known ~= '' then
  mine = {ticket = ticket, holding = restore(ARGV[4], known, lease), who = known_holder(known)}
else
  return -1
end
local holding = mine.holding
if not holding and not RECOVERING then
  local held, first = 0, nil
  for _, t in ipairs(tickets) do
    if t.holding then
      held = held + 1
    elseif not first or t.ticket < first then
      first = t.ticket
    end
  end
  holding = held < limit_of(KEYS[4], ARGV[3], ARGV[7]) and first == ticket
end
redis.call('HSET', KEYS[2], ARGV[4], encode(holding, NOW + lease, mine.who))
touch(KEYS[2])
touch(KEYS[1])
return holding and 1 or 0
