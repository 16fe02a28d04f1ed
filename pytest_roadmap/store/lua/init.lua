-- Start the run, or join it if another job of the same run already has.
-- KEYS[1]: the run's meta hash.
-- ARGV[1]: the key TTL in ms; ARGV[2]: the schema version.
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'version', ARGV[2], 'recover_until', '0')
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
