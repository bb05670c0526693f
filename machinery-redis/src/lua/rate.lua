-- Reserves a start slot under a rate limit: GCRA with reservation, on the server's
-- clock, so every worker shares one schedule whatever its own clock says.
--
-- KEYS[1]  <p>:{rate:<key>}: the theoretical arrival time (TAT), µs since the epoch;
--          it expires once it is in the past (a missing key is a TAT of 0)
-- ARGV[1]  the interval between two starts, µs (period / count)
-- ARGV[2]  the horizon, µs: how far ahead a slot may be reserved
--
-- With start = max(now, TAT): when start - now <= horizon, TAT becomes start +
-- interval and the reply is {1, start - now} (granted: wait that long, µs); otherwise
-- nothing changes and the reply is {0, start - now - horizon / 2} (ask again then, µs).
-- Lua numbers are doubles: µs since the epoch stay exact below 2^53 (year 2255).

-- Before Redis 5 a script writing after TIME must replicate its effects.
if redis.replicate_commands then
  pcall(redis.replicate_commands)
end

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
local interval = tonumber(ARGV[1])
local horizon = tonumber(ARGV[2])

local start = math.max(now, tat)
local ahead = start - now
if ahead <= horizon then
  local next_tat = start + interval
  -- Kept until the TAT is past (plus a second); after that it means nothing.
  local ttl_ms = math.floor((next_tat - now) / 1000) + 1000
  redis.call('SET', KEYS[1], string.format('%.0f', next_tat), 'PX', ttl_ms)
  return {1, ahead}
end
return {0, ahead - math.floor(horizon / 2)}
