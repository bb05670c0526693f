-- Guarded state writes of tasks sent to one queue (`ResultBackend::store`, and the
-- states a completion writes in other queues).
-- KEYS: their state keys (one slot).
-- ARGV: ttl_ms (0 = keep), then per key (2, `StoreArgs` in scripts.rs): done channel
--       ('' = a non-final state), state bytes.
-- Reply: 1.
-- A non-final state (PENDING, RECEIVED, STARTED, RETRY) is written without TTL unless
-- the task's stored state is final (it stays). A final one (SUCCESS, FAILURE) is
-- written with the results TTL and published on its done channel unless the stored
-- state is REVOKED (it stays, and nothing is published). REVOKED states and the
-- PENDING states of a send are written by the client as they are (plain `SET`).
local ttl_ms = ARGV[1]
local ttl = tonumber(ttl_ms)
for k = 1, #KEYS do
  local channel, bytes = ARGV[2 * k], ARGV[2 * k + 1]
  if channel == '' then
    store_open(KEYS[k], bytes)
  elseif store_final(KEYS[k], bytes, ttl, ttl_ms, true) then
    redis.call('PUBLISH', channel, bytes)
  end
end
return 1
