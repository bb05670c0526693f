-- Queues messages into one queue.
-- KEYS: the queue's keys (`queue_keys`, 8).
-- ARGV: (eta ms or 0, priority 0-9, payload) per message (`PublishArgs` in scripts.rs).
-- Reply: 1.
-- One INCRBY reserves the ids, then one HSET stores every payload and one ZADD queues
-- every ready id (one more for delayed ids): a few commands per call instead of a few
-- per message.
local q = queue_keys()
local now = now_ms()
local n = #ARGV / 3
local last = redis.call('INCRBY', q.seq, n)
local first = last - n + 1
local msgs, ready, delayed = {}, {}, {}
for k = 0, n - 1 do
  local i = 1 + 3 * k
  local seq = tostring(first + k)
  local priority = ARGV[i + 1]
  local id = priority .. ':' .. seq
  msgs[#msgs + 1] = id
  msgs[#msgs + 1] = ARGV[i + 2]
  local eta = ARGV[i]
  if eta ~= '0' and tonumber(eta) > now then
    delayed[#delayed + 1] = eta
    delayed[#delayed + 1] = id
  else
    ready[#ready + 1] = ready_score(priority, seq)
    ready[#ready + 1] = id
  end
end
redis.call('HSET', q.msg, unpack(msgs))
if #ready > 0 then
  redis.call('ZADD', q.ready, unpack(ready))
end
if #delayed > 0 then
  redis.call('ZADD', q.delayed, unpack(delayed))
end
return 1
