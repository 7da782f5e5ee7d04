-- admit: a submit's whole Redis side before the wait, in one call (app/rqueue.py RowQueue.admit).
-- Counts the request against its caller's rate limits (the same fixed-window counters,
-- keys and expiry as the `limits` library's), looks up the rows' cached outputs and the
-- queue's depth, and appends the item unless a row is cached or the queue is too deep;
-- the push holds the queue for a worker when none holds it.
-- KEYS: queue, active, the caller's rate-limit counters (ARGV[4] of them), then the rows'
--       cache keys.
-- ARGV: item ('' only counts and looks), active ttl, most jobs a queue may hold (-1: no
--       bound), number of counters, then each counter's limit and window in seconds.
-- Reply: {'limited', counter index, ttl} | {'cached' or 'looked', depth, outputs...}
--        | {'overloaded', depth} | {'queued', depth, 1 when the caller must wake a worker}
local n_limits = tonumber(ARGV[4])
for i = 1, n_limits do
  local key = KEYS[2 + i]
  local count = redis.call('INCRBY', key, 1)
  if count == 1 then redis.call('EXPIRE', key, ARGV[4 + 2 * i]) end
  if count > tonumber(ARGV[3 + 2 * i]) then return {'limited', i, redis.call('TTL', key)} end
end
local depth = redis.call('LLEN', KEYS[1])
local look_only = ARGV[1] == ''
local first_cache_key = 3 + n_limits
if #KEYS >= first_cache_key then
  local cached = redis.call('MGET', unpack(KEYS, first_cache_key))
  local answer = look_only and 'looked' or nil
  for i = 1, #cached do
    if cached[i] then answer = answer or 'cached' end
  end
  if answer then
    table.insert(cached, 1, depth)
    table.insert(cached, 1, answer)
    return cached
  end
end
if look_only then return {'looked', depth} end
local bound = tonumber(ARGV[3])
if bound >= 0 and depth >= bound then return {'overloaded', depth} end
redis.call('RPUSH', KEYS[1], ARGV[1])
if redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[2]) then return {'queued', depth, 1} end
return {'queued', depth, 0}
