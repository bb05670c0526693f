-- Queues one unique message unless its lock or its task's UUID is held
-- (`Broker::publish_unique`): the check, the lock, the PENDING state and the message
-- in one step, so that of any number of racing senders exactly one queues.
-- KEYS: the queue's keys (`queue_keys`, 8), the state key of the message's task, then
--       the lock key (left out when the message deduplicates by UUID only).
-- ARGV: uuid, lock ttl ms, state bytes, eta ms or 0, priority 0-9, payload
--       (`PublishUniqueArgs` in scripts.rs).
-- Reply: {1, uuid} when queued; {0, holder} when the lock is held (holder: the UUID it
-- holds); {0, uuid} when the task's own stored state is not final (waiting, delayed,
-- running or retrying).
local q = queue_keys()
local state_key, lock = KEYS[QUEUE_KEY_COUNT + 1], KEYS[QUEUE_KEY_COUNT + 2]
local uuid = ARGV[1]
if lock then
  local holder = redis.call('GET', lock)
  if holder then return {0, holder} end
end
local stored = redis.call('GET', state_key)
if stored and not is_final(stored) then return {0, uuid} end
if lock then
  redis.call('SET', lock, uuid, 'PX', ARGV[2])
end
-- As a send stores it (`store_new`): as it is, without TTL, over a final state too.
redis.call('SET', state_key, ARGV[3])
enqueue(q, tonumber(ARGV[4]), ARGV[5], ARGV[6], now_ms())
return {1, uuid}
