-- Queue a waiting ticket; returns it.
-- KEYS[1]: meta; KEYS[2]: the gate's hash; KEYS[3]: the ticket counter;
-- KEYS[4]: this call's op key.
-- ARGV[1], ARGV[2]: the prelude's; ARGV[3]: holder; ARGV[4]: lease (s);
-- ARGV[5]: the op key's TTL (ms).
--! include prelude
--! include gate
-- A retry after a lost reply must not queue a second ticket.
local done = redis.call('GET', KEYS[4])
if done then return tonumber(done) end
counter()
local ticket = redis.call('INCR', KEYS[3])
redis.call('HSET', KEYS[2], ticket, encode(false, NOW + tonumber(ARGV[4]), ARGV[3]))
redis.call('SET', KEYS[4], ticket, 'PX', ARGV[5])
touch(KEYS[2])
touch(KEYS[1])
return ticket
