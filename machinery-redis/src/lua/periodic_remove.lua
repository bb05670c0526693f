-- Removes a periodic entry. KEYS[1] the entry's hash, KEYS[2] the set of entry names.
-- ARGV[1] the name. Returns 1 when it existed.
local removed = redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
return removed
