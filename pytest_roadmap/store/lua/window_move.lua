-- Move an entry of a sliding log to now if no window then holds more than the limit;
-- returns 1 if it moved (or was no earlier than now), 0 if it stays or is gone.
-- KEYS[1]: meta; KEYS[2]: the log's hash (see window_reserve.lua).
-- ARGV[1], ARGV[2]: the prelude's; ARGV[3]: entry id; ARGV[4]: window (s); ARGV[5]: limit.
--! include prelude
local v = redis.call('HGET', KEYS[2], ARGV[3])
if not v then return 0 end
local at, amount = string.match(v, '^([^|]*)|(.*)$')
at, amount = tonumber(at), tonumber(amount)
if at >= NOW then return 1 end
local window, limit = tonumber(ARGV[4]), tonumber(ARGV[5])
local others = {}
local all = redis.call('HGETALL', KEYS[2])
for i = 1, #all, 2 do
  if all[i] ~= 'n' and all[i] ~= ARGV[3] then
    local t, taken = string.match(all[i + 1], '^([^|]*)|(.*)$')
    t = tonumber(t)
    if t > NOW - window then others[#others + 1] = {at = t, taken = tonumber(taken)} end
  end
end
-- store/base.py's window_fits, step for step (the order of the entries does not matter).
local ends = {NOW}
for _, e in ipairs(others) do
  if e.at > NOW and e.at < NOW + window then ends[#ends + 1] = e.at end
end
for _, finish in ipairs(ends) do
  local held = 0
  for _, e in ipairs(others) do
    if e.at > finish - window and e.at <= finish then held = held + e.taken end
  end
  if held + amount > limit then return 0 end
end
redis.call('HSET', KEYS[2], ARGV[3], num(NOW) .. '|' .. int(amount))
touch(KEYS[2])
touch(KEYS[1])
return 1
