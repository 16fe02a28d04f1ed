-- Set a gate's limit.
-- KEYS[1]: meta; KEYS[2]: the limit hash (gate key -> limit).
-- ARGV[1], ARGV[2]: the prelude's; ARGV[3]: gate key; ARGV[4]: limit.
--! include prelude
redis.call('HSET', KEYS[2], ARGV[3], ARGV[4])
touch(KEYS[2])
touch(KEYS[1])
return 1
