-- KEYS[1]: the queue's ready set. ARGV: prefix, queue, then (eta_ms, priority, payload)
-- per message. One INCRBY reserves the ids, then one HSET stores every payload and one
-- ZADD queues every ready id (one more for delayed ids): a few commands per call
-- instead of a few per message.
local prefix, queue = ARGV[1], ARGV[2]
local now = now_ms()
local n = (#ARGV - 2) / 3
local last = redis.call('INCRBY', qkey(prefix, queue, 'seq'), n)
local first = last - n + 1
local msgs, ready, delayed = {}, {}, {}
for k = 0, n - 1 do
  local i = 3 + 3 * k
  local seq = first + k
  local priority = tonumber(ARGV[i + 1])
  local id = priority .. ':' .. seq
  msgs[#msgs + 1] = id
  msgs[#msgs + 1] = ARGV[i + 2]
  local eta = tonumber(ARGV[i])
  if eta > now then
    delayed[#delayed + 1] = eta
    delayed[#delayed + 1] = id
  else
    ready[#ready + 1] = ready_score(priority, seq)
    ready[#ready + 1] = id
  end
end
redis.call('HSET', qkey(prefix, queue, 'msg'), unpack(msgs))
if #ready > 0 then
  redis.call('ZADD', qkey(prefix, queue, 'ready'), unpack(ready))
end
if #delayed > 0 then
  redis.call('ZADD', qkey(prefix, queue, 'delayed'), unpack(delayed))
end
return 1
