-- Pauses (ARGV[1] = '1') or resumes (ARGV[1] = '0') a periodic entry. A resume raises
-- the claim watermark to ARGV[2] (now, ms), so no tick of the pause is caught up.
-- KEYS[1] the entry's hash. Returns 1 when the entry exists.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
redis.call('HSET', KEYS[1], 'paused', ARGV[1])
if ARGV[1] == '0' then
  local claimed = tonumber(redis.call('HGET', KEYS[1], 'claimed') or '-1')
  if tonumber(ARGV[2]) > claimed then
    redis.call('HSET', KEYS[1], 'claimed', ARGV[2])
  end
end
return 1
