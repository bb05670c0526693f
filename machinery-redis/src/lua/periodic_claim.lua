-- Claims one tick of a periodic entry: the claim is a watermark, so a tick is won once,
-- by one caller, and only while it is later than every tick claimed before (and than
-- the entry's creation or last resume).
-- KEYS: the entry's hash.
-- ARGV: the tick's scheduled instant (ms) (the one call in periodic.rs).
-- Reply: 1 won, 0 taken, 2 paused, 3 missing (removed).
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 3
end
if redis.call('HGET', KEYS[1], 'paused') == '1' then
  return 2
end
local claimed = tonumber(redis.call('HGET', KEYS[1], 'claimed') or '-1')
if tonumber(ARGV[1]) <= claimed then
  return 0
end
redis.call('HSET', KEYS[1], 'claimed', ARGV[1])
return 1
