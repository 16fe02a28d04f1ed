-- Reserve one send against several GCRA keys at once; returns {send, tat of each key}.
-- KEYS[1]: meta; KEYS[2]: the rate hash (key -> tat).
-- ARGV[1], ARGV[2]: the prelude's; then, from ARGV[3], five per key:
--   key, interval (s), burst, hint (the latest tat this process was given, or 0),
--   steps ("from interval from interval ...", in time order, or empty: Spacing.later).
--! include prelude
local n = (#ARGV - 2) / 5
local send = NOW
local tats = {}
for i = 0, n - 1 do
  local at = 3 + 5 * i
  local interval, burst = tonumber(ARGV[at + 1]), tonumber(ARGV[at + 2])
  -- GCRA, as in the SQLite store: `tat` is when the bucket is empty again.
  local tat = tonumber(redis.call('HGET', KEYS[2], ARGV[at]))
  if not tat then
    tat = RECOVERING and RECOVER_UNTIL + (burst - 1) * interval or NOW
  end
  -- The hint is the latest `tat` this caller was given: a no-op unless the state
  -- was lost or rolled back.
  tat = math.max(tat, tonumber(ARGV[at + 3]), NOW)
  send = math.max(send, tat - (burst - 1) * interval)
  tats[i + 1] = tat
end
local out = {num(send)}
for i = 0, n - 1 do
  local at = 3 + 5 * i
  local interval = tonumber(ARGV[at + 1])
  -- A rising rate: the step in force at the send moves the schedule (as the SQLite store).
  local from = nil
  for word in string.gmatch(ARGV[at + 4], '%S+') do
    if from == nil then
      from = tonumber(word)
    else
      if send >= from then interval = tonumber(word) end
      from = nil
    end
  end
  local new = math.max(tats[i + 1], send) + interval
  redis.call('HSET', KEYS[2], ARGV[at], num(new))
  out[#out + 1] = num(new)
end
touch(KEYS[2])
touch(KEYS[1])
return out
