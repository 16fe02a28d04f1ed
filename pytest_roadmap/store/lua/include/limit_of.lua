-- The gate limit helper, included after prelude.lua.
-- `hint` is the limit this process set, or "": after a loss, it puts it back.
local function limit_of(hash, key, hint)
  local lim = redis.call('HGET', hash, key)
  if not lim and hint ~= '' then
    redis.call('HSET', hash, key, hint)
    touch(hash)
    lim = hint
  end
  return tonumber(lim) or 1
end
