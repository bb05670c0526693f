-- Non-final states (PENDING, RECEIVED, STARTED, RETRY) of tasks sent to one queue.
-- KEYS: their state keys (one slot).
-- ARGV: the state bytes, one per key (`StoreOpenArgs` in scripts.rs).
-- Reply: 1.
-- Each is written without TTL, unless the task's stored state is final (it stays).
for k = 1, #KEYS do
  store_open(KEYS[k], ARGV[k])
end
return 1
