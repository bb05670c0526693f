-- Writes a worker's registry record and indexes it.
-- KEYS: the record, the index of workers.
-- ARGV: worker id, record (MessagePack), TTL ms (`RegisterArgs` in scripts.rs).
-- Reply: 1.
-- The index is scored by when the record expires, on the server's clock (the record's
-- TTL runs on it too); members whose record expired are dropped here and by listings.
local now = now_ms()
local ttl = tonumber(ARGV[3])
redis.call('SET', KEYS[1], ARGV[2], 'PX', ttl)
redis.call('ZADD', KEYS[2], now + ttl, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. now)
return 1
