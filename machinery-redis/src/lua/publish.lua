-- ARGV: prefix, then (queue, eta_ms, priority, payload) per message.
-- Batched per queue: one INCRBY reserves the ids, then one HSET stores every payload
-- and one ZADD queues every ready id (one more for delayed ids): a few commands per
-- call instead of a few per message.
local prefix = ARGV[1]
local now = now_ms()
local by_queue = {}
local order = {}
for i = 2, #ARGV, 4 do
  local queue = ARGV[i]
  local list = by_queue[queue]
  if not list then
    list = {}
    by_queue[queue] = list
    order[#order + 1] = queue
  end
  list[#list + 1] = i
end
for _, queue in ipairs(order) do
  local list = by_queue[queue]
  remember(prefix, queue)
  local last = redis.call('INCRBY', qkey(prefix, queue, 'seq'), #list)
  local first = last - #list + 1
  local msgs, ready, delayed = {}, {}, {}
  for k, i in ipairs(list) do
    local seq = first + k - 1
    local priority = tonumber(ARGV[i + 2])
    local id = priority .. ':' .. seq
    msgs[#msgs + 1] = id
    msgs[#msgs + 1] = ARGV[i + 3]
    local eta = tonumber(ARGV[i + 1])
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
  -- A delayed message wakes blocked workers too, so they re-plan their next wake-up.
  wake(prefix, queue)
end
return 1
