-- Shared prelude, included by every script but init.lua.
-- KEYS[1]: the run's meta hash.
-- ARGV[1]: the key TTL in ms; ARGV[2]: the recovery pause in seconds.
-- Defines TTL, NOW (the server's time, to the microsecond), num, int, touch,
-- RECOVER_UNTIL and RECOVERING.
if redis.replicate_commands then redis.replicate_commands() end
local TTL = tonumber(ARGV[1])
local function num(x) return string.format('%.17g', x) end
local function int(x) return string.format('%d', x) end
local function touch(key) redis.call('PEXPIRE', key, TTL) end
local NOW
do
  local t = redis.call('TIME')
  NOW = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
-- A missing meta hash means the server lost the run's state: whatever was admitted
-- before is unknown, so nothing new is admitted until RECOVER_UNTIL.
local RECOVER_UNTIL = tonumber(redis.call('HGET', KEYS[1], 'recover_until'))
if not RECOVER_UNTIL then
  RECOVER_UNTIL = NOW + tonumber(ARGV[2])
  redis.call('HSET', KEYS[1], 'recover_until', num(RECOVER_UNTIL), 'lost_at', num(NOW))
  touch(KEYS[1])
end
local RECOVERING = NOW < RECOVER_UNTIL
