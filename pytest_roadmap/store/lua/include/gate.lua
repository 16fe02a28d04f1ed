-- Gate helpers, included after prelude.lua.
-- KEYS[2]: the gate's hash, ticket -> "<holding 0|1>|<expires>|<holder>".
-- KEYS[3]: the run's ticket counter (used by counter and restore only).
local function decode(v)
  local h, e, who = string.match(v, '^(%d)|([^|]*)|(.*)$')
  return h == '1', tonumber(e), who
end
local function encode(holding, expires, who)
  return (holding and '1|' or '0|') .. num(expires) .. '|' .. who
end
local function live(purge)
  local all = redis.call('HGETALL', KEYS[2])
  local out = {}
  for i = 1, #all, 2 do
    local holding, expires, who = decode(all[i + 1])
    if expires > NOW then
      out[#out + 1] = {field = all[i], ticket = tonumber(all[i]), holding = holding, who = who}
    elseif purge then
      redis.call('HDEL', KEYS[2], all[i])
    end
  end
  return out
end
-- Tickets count up from the server's time in ms, so numbers handed out after a loss
-- (which also loses the counter) come after every earlier one.
local function counter()
  if redis.call('EXISTS', KEYS[3]) == 0 then
    redis.call('SET', KEYS[3], int(math.floor(NOW * 1000)))
  end
  touch(KEYS[3])
end
-- `known` is "<holding>|<holder>" from the process that has the ticket, or "".
local function known_holder(known) return string.sub(known, 3) end
local function restore(field, known, lease)
  counter()
  local holding = string.sub(known, 1, 1) == '1'
  redis.call('HSET', KEYS[2], field, encode(holding, NOW + lease, known_holder(known)))
  return holding
end
