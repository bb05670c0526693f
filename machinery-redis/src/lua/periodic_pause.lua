-- Pauses or resumes a periodic entry. A resume raises the claim watermark to now, so no
-- tick of the pause is caught up.
-- KEYS: the entry's hash.
-- ARGV: '1' to pause or '0' to resume, now (ms) (the one call in periodic.rs).
-- Reply: 1 when the entry exists, else 0.
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
