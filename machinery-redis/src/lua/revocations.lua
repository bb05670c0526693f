-- The revocations that have not ended.
-- KEYS: the revocations set, their reasons hash (`trim_revocations`; one slot).
-- ARGV: none (`RevocationsArgs` in scripts.rs).
-- Reply: {uuid, until, reason} flattened, one triple per revocation; until as Redis
-- formats the score ('inf' for never), reason false when none is stored.
-- Ended ones are dropped first (up to 1,000) and never listed, on the server's clock.
local rk, hk = KEYS[1], KEYS[2]
local now = now_ms()
trim_revocations(rk, hk, now)
local live = redis.call('ZRANGEBYSCORE', rk, '(' .. now, '+inf', 'WITHSCORES')
local out = {}
local chunk = 2000
for i = 1, #live, 2 * chunk do
  local uuids = {}
  for j = i, math.min(i + 2 * chunk - 1, #live), 2 do
    uuids[#uuids + 1] = live[j]
  end
  local reasons = redis.call('HMGET', hk, unpack(uuids))
  for j = 1, #uuids do
    out[#out + 1] = uuids[j]
    out[#out + 1] = live[i + 2 * (j - 1) + 1]
    out[#out + 1] = reasons[j]
  end
end
return out
