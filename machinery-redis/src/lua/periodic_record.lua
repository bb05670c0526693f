-- Records a published tick. Never recreates a removed entry, never goes back in time.
-- KEYS: the entry's hash.
-- ARGV: the tick (ms), the task's UUID, next run (ms or '') (the one call in periodic.rs).
-- Reply: 1 when recorded, else 0.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
local last = tonumber(redis.call('HGET', KEYS[1], 'last_run') or '-1')
if tonumber(ARGV[1]) <= last then
  return 0
end
redis.call('HSET', KEYS[1], 'last_run', ARGV[1], 'last_task', ARGV[2])
if ARGV[3] == '' then
  redis.call('HDEL', KEYS[1], 'next_run')
else
  redis.call('HSET', KEYS[1], 'next_run', ARGV[3])
end
return 1
