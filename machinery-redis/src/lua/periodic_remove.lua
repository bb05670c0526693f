-- Removes a periodic entry.
-- KEYS: the entry's hash, the set of entry names.
-- ARGV: the name (the one call in periodic.rs).
-- Reply: 1 when it existed, else 0.
local removed = redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
return removed
