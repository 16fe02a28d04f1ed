-- A gate's limit (1 if never set).
-- KEYS[1]: meta; KEYS[2]: the limit hash (gate key -> limit).
-- ARGV[1], ARGV[2]: the prelude's; ARGV[3]: gate key; ARGV[4]: limit hint, or "".
--! include prelude
--! include limit_of
return limit_of(KEYS[2], ARGV[3], ARGV[4])
