-- Records a revocation and tells the watching workers.
-- KEYS: the revocations set, their reasons hash (`trim_revocations`; one slot).
-- ARGV: task UUID, until (ms since the Unix epoch, or '+inf'), reason, the revocations
--       channel, the message for it (`RevocationArgs` in scripts.rs).
-- Reply: 1.
-- Revoking a task again replaces its end and reason. Revocations that ended are
-- dropped here (up to 1,000 per call), on the server's clock.
local rk, hk = KEYS[1], KEYS[2]
trim_revocations(rk, hk, now_ms())
redis.call('ZADD', rk, ARGV[2], ARGV[1])
redis.call('HSET', hk, ARGV[1], ARGV[3])
redis.call('PUBLISH', ARGV[4], ARGV[5])
return 1
