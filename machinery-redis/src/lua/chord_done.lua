-- A chord member's final state, for a result backend used with another broker:
-- ARGV: prefix, ttl_ms, group, index, success 0/1, result, name, error.
-- Returns the callback payload, queue and priority when this call fires it, else nil.
local prefix, ttl, group = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local fired = chord_member(prefix, ttl, group, ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8])
if fired == nil then
  return redis.error_reply('chord ' .. group .. ' is unknown or expired')
end
if fired then
  local ck = prefix .. ':chord:' .. group
  return {redis.call('HGET', ck, 'callback'), redis.call('HGET', ck, 'queue'), redis.call('HGET', ck, 'priority')}
end
return false
