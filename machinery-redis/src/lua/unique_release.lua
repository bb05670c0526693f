-- Releases a unique lock if the given task holds it (compare-and-delete), for
-- completions settled step by step (`Broker::release_unique`); `complete.lua` does the
-- same in its own step.
-- KEYS: the lock key.
-- ARGV: the task's UUID.
-- Reply: 1 when released, else 0.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
