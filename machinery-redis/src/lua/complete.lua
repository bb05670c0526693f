-- One finished delivery, settled atomically and fenced by its lease:
-- ARGV: prefix, ttl_ms (0 = keep), queue, id, token,
--       n_states, (uuid, terminal 0/1, state bytes) * n_states,
--       n_publish, (queue, eta, priority, payload) * n_publish,
--       chord group ('' = none), index, success 0/1, result, name, error.
-- Returns 0 when the lease was lost (nothing written), else 1.
local prefix, ttl, queue, id, token = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4], ARGV[5]
if not holds(prefix, queue, id, token) then return 0 end
local i = 6
local n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do
  local key = prefix .. ':state:' .. ARGV[i]
  if ttl > 0 then
    redis.call('SET', key, ARGV[i + 2], 'PX', ttl)
  else
    redis.call('SET', key, ARGV[i + 2])
  end
  if ARGV[i + 1] == '1' then
    redis.call('PUBLISH', prefix .. ':done:' .. ARGV[i], ARGV[i + 2])
  end
  i = i + 3
end
local now = now_ms()
local woken = {}
n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do
  local q = ARGV[i]
  if enqueue(prefix, q, tonumber(ARGV[i + 1]), ARGV[i + 2], ARGV[i + 3], now) == 1 and not woken[q] then
    woken[q] = true
    wake(prefix, q)
  end
  i = i + 4
end
local group = ARGV[i]
if group ~= '' then
  local ck = prefix .. ':chord:' .. group
  local rk = ck .. ':results'
  if redis.call('EXISTS', ck) == 1 then
    if ARGV[i + 2] == '1' then
      redis.call('HSET', rk, ARGV[i + 1], ARGV[i + 3])
    else
      redis.call('HSETNX', ck, 'failure', ARGV[i + 1] .. '\n' .. ARGV[i + 4] .. '\n' .. ARGV[i + 5])
    end
    if ttl > 0 then
      redis.call('PEXPIRE', ck, ttl)
      redis.call('PEXPIRE', rk, ttl)
    end
    local count = tonumber(redis.call('HGET', ck, 'count'))
    local finished = redis.call('HLEN', rk) >= count or redis.call('HEXISTS', ck, 'failure') == 1
    if finished and redis.call('HSETNX', ck, 'fired', 1) == 1 then
      local q = redis.call('HGET', ck, 'queue')
      local prio = redis.call('HGET', ck, 'priority')
      if enqueue(prefix, q, 0, prio, redis.call('HGET', ck, 'callback'), now) == 1 then
        wake(prefix, q)
      end
    end
  end
end
forget(prefix, queue, id)
return 1
