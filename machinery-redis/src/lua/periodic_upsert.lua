-- Registers a periodic entry, or updates the spec of an existing one.
-- KEYS: the entry's hash, the set of entry names.
-- ARGV: name, spec, time zone, now (ms), next run (ms, or '' for none) (the one call in
--       periodic.rs).
-- Reply: 1 when created, 0 when updated.
-- A new entry is not paused and cannot claim ticks at or before now; an existing one
-- keeps its pause flag, last run and claims.
local created = 0
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'paused', '0', 'claimed', ARGV[4])
  created = 1
end
redis.call('HSET', KEYS[1], 'spec', ARGV[2], 'tz', ARGV[3])
if ARGV[5] == '' then
  redis.call('HDEL', KEYS[1], 'next_run')
else
  redis.call('HSET', KEYS[1], 'next_run', ARGV[5])
end
redis.call('SADD', KEYS[2], ARGV[1])
return created
