-- Drop a ticket, holding or waiting.
-- KEYS[1]: meta; KEYS[2]: the gate's hash.
-- ARGV[1], ARGV[2]: the prelude's; ARGV[3]: ticket.
--! include prelude
redis.call('HDEL', KEYS[2], ARGV[3])
return 1
