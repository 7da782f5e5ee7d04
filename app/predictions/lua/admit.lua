-- admit: a submit's whole Redis side before the wait, in one call (app/predictions/queue.py RowQueue.admit).
-- Counts the request against its caller's rate limits (the same fixed-window counters,
-- keys and expiry as the `limits` library's), looks up the rows' cached outputs and the
-- version's depth (its jobs waiting on every priority's queue), and appends the item unless
-- a row is cached or the version holds too many; the push holds the queue for a worker when
-- none holds it. A push with no bound (a stored job's, the sweeper's) does not count: no
-- caller reads that depth, and each LLEN is a command on the hot path.
-- KEYS: queue (the item's priority's), active, the version's two other priority queues, the
--       caller's rate-limit counters (ARGV[4] of them), then the rows' cache keys.
-- ARGV: item ('' only counts and looks), active ttl, most jobs the version may hold waiting
--       (-1: no bound), number of counters, then each counter's limit and window in seconds.
-- Reply: {'limited', counter index, ttl} | {'cached' or 'looked', depth, outputs...}
--        | {'overloaded', depth} | {'queued', depth (-1: not counted), 1 when the caller must
--        wake a worker}
local n_limits = tonumber(ARGV[4])
for i = 1, n_limits do
  local key = KEYS[4 + i]
  local count = redis.call('INCRBY', key, 1)
  if count == 1 then redis.call('EXPIRE', key, ARGV[4 + 2 * i]) end
  if count > tonumber(ARGV[3 + 2 * i]) then return {'limited', i, redis.call('TTL', key)} end
end
local function depth()
  return redis.call('LLEN', KEYS[1]) + redis.call('LLEN', KEYS[3]) + redis.call('LLEN', KEYS[4])
end
local look_only = ARGV[1] == ''
local first_cache_key = 5 + n_limits
if #KEYS >= first_cache_key then
  local cached = redis.call('MGET', unpack(KEYS, first_cache_key))
  local answer = look_only and 'looked' or nil
  for i = 1, #cached do
    if cached[i] then answer = answer or 'cached' end
  end
  if answer then
    table.insert(cached, 1, depth())
    table.insert(cached, 1, answer)
    return cached
  end
end
if look_only then return {'looked', depth()} end
local bound = tonumber(ARGV[3])
local waiting = -1
if bound >= 0 then waiting = depth() end
if bound >= 0 and waiting >= bound then return {'overloaded', waiting} end
redis.call('RPUSH', KEYS[1], ARGV[1])
if redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[2]) then return {'queued', waiting, 1} end
return {'queued', waiting, 0}
