-- A chord member's final state, for a result backend used with another broker:
-- ARGV: prefix, ttl_ms, group, index, success 0/1, result, name, error.
-- Returns the callback payload, queue and priority when this call fires it, else nil.
local prefix, ttl, group = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local ck = prefix .. ':chord:' .. group
local rk = ck .. ':results'
if redis.call('EXISTS', ck) == 0 then return redis.error_reply('chord ' .. group .. ' is unknown or expired') end
if ARGV[5] == '1' then
  redis.call('HSET', rk, ARGV[4], ARGV[6])
else
  redis.call('HSETNX', ck, 'failure', ARGV[4] .. '\n' .. ARGV[7] .. '\n' .. ARGV[8])
end
if ttl > 0 then
  redis.call('PEXPIRE', ck, ttl)
  redis.call('PEXPIRE', rk, ttl)
end
local count = tonumber(redis.call('HGET', ck, 'count'))
local finished = redis.call('HLEN', rk) >= count or redis.call('HEXISTS', ck, 'failure') == 1
if finished and redis.call('HSETNX', ck, 'fired', 1) == 1 then
  return {redis.call('HGET', ck, 'callback'), redis.call('HGET', ck, 'queue'), redis.call('HGET', ck, 'priority')}
end
return false
