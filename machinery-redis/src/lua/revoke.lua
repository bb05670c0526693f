-- Replaces a task's PENDING or RETRY state with REVOKED, when it is still the state the
-- client read (compare and set: the client builds the REVOKED state from it).
-- KEYS: the task's state key.
-- ARGV: the state read, the REVOKED state, ttl_ms (0 = keep), the task's done channel
--       (`RevokeArgs` in scripts.rs).
-- Reply: 1 when REVOKED was written (with the results TTL, and published to the task's
-- waiters); else the stored state (nil when there is none), for the client to decide
-- again.
local stored = redis.call('GET', KEYS[1])
if stored ~= ARGV[1] then return stored end
local ttl_ms = ARGV[3]
store_final(KEYS[1], ARGV[2], tonumber(ttl_ms), ttl_ms, false)
redis.call('PUBLISH', ARGV[4], ARGV[2])
return 1
