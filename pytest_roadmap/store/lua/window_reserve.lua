-- Place an amount in a sliding log; returns {entry id, send time}, as strings.
-- KEYS[1]: meta; KEYS[2]: the log's hash (id -> "<time>|<amount>", and "n": the last id);
-- KEYS[3]: this call's op key.
-- ARGV[1], ARGV[2]: the prelude's; ARGV[3]: amount; ARGV[4]: window (s); ARGV[5]: limit;
-- ARGV[6]: the op key's TTL (ms); ARGV[7]: hint (the latest send time this process was
-- given in the log, or 0).
--! include prelude
-- A retry after a lost reply must not place a second entry.
local done = redis.call('GET', KEYS[3])
if done then
  local id, at = string.match(done, '^([^|]*)|(.*)$')
  return {id, at}
end
local amount, window, limit = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local send = NOW
if redis.call('EXISTS', KEYS[2]) == 0 then
  -- Gone after the server lost the run's state: what went out before is unknown, so the
  -- first entry waits for the window before the loss, and for any entry this process
  -- had been given, to pass.
  local lost = tonumber(redis.call('HGET', KEYS[1], 'lost_at'))
  if lost then
    send = math.max(send, lost + window, RECOVER_UNTIL, tonumber(ARGV[7]) + window)
  end
  -- Ids count up from the server's time in ms: ids handed out after a loss never meet
  -- earlier ones.
  redis.call('HSET', KEYS[2], 'n', int(math.floor(NOW * 1000)))
end
-- The log, as in the SQLite store: entries older than the window at NOW are dropped.
local entries = {}
local all = redis.call('HGETALL', KEYS[2])
for i = 1, #all, 2 do
  if all[i] ~= 'n' then
    local at, taken = string.match(all[i + 1], '^([^|]*)|(.*)$')
    at, taken = tonumber(at), tonumber(taken)
    if at <= NOW - window then
      redis.call('HDEL', KEYS[2], all[i])
    else
      entries[#entries + 1] = {id = tonumber(all[i]), at = at, taken = taken}
    end
  end
end
table.sort(entries, function(x, y)
  if x.at ~= y.at then return x.at < y.at end
  return x.id < y.id
end)
-- store/base.py's window_place, step for step.
if #entries > 0 then send = math.max(send, entries[#entries].at) end
local first = 1
while first <= #entries and entries[first].at <= send - window do first = first + 1 end
local held = 0
for i = first, #entries do held = held + entries[i].taken end
for i = first, #entries do
  if held + amount <= limit then break end
  send = math.max(send, entries[i].at + window)
  held = held - entries[i].taken
end
local id = int(redis.call('HINCRBY', KEYS[2], 'n', 1))
redis.call('HSET', KEYS[2], id, num(send) .. '|' .. ARGV[3])
redis.call('SET', KEYS[3], id .. '|' .. num(send), 'PX', ARGV[6])
touch(KEYS[2])
touch(KEYS[1])
return {id, num(send)}
