-- publish: a finished batch in one command (app/predictions/cache.py publish_results): each
-- job's view onto its done list (long-polls BLMOVE that list onto itself) and under its
-- result key, and each row's output into the cache. One call instead of a pipeline of
-- 1 + 3 per job commands: redis-py spends more time packing each command than Redis
-- running it. The done lists go first: they are what a waiting caller needs, and when
-- the cache's writes are refused (a Redis at its maxmemory) the pushes are already made.
-- With a cache Redis of its own (CACHE_REDIS_URL) the call is made twice: the queue's
-- Redis gets the done lists (and the counts), the cache's the result keys and the outputs.
-- Last, the batch's jobs are added to the minute's throughput counts (app/throughput.py),
-- saving a round trip of their own per batch.
-- KEYS: cache keys..., then per view its result key (when results = 1) and its done key
--       (when done = 1), in that order, then the counts' hash (when there are counts).
-- ARGV: cache ttl, result ttl, done-list ttl, number of cache keys, done (1 or 0),
--       results (1 or 0), number of counts, the counts' hash ttl, then each count's field
--       and increment, then one value per cache key, then one view per job.
-- Reply: how many jobs were published.
local n_cache = tonumber(ARGV[4])
local done, results = ARGV[5] == '1', ARGV[6] == '1'
local n_counts = tonumber(ARGV[7])
local per_view = (done and 1 or 0) + (results and 1 or 0)
local first_value = 9 + 2 * n_counts
local first_view = first_value + n_cache
local n_views = #ARGV - first_view + 1
if done then
  for j = 0, n_views - 1 do
    local key = KEYS[n_cache + (j + 1) * per_view]
    redis.call('RPUSH', key, ARGV[first_view + j])
    redis.call('EXPIRE', key, ARGV[3])
  end
end
for i = 1, n_cache do
  redis.call('SET', KEYS[i], ARGV[first_value + i - 1], 'EX', ARGV[1])
end
if results then
  for j = 0, n_views - 1 do
    redis.call('SET', KEYS[n_cache + j * per_view + 1], ARGV[first_view + j], 'EX', ARGV[2])
  end
end
if n_counts > 0 then
  local counts = KEYS[#KEYS]
  for i = 0, n_counts - 1 do
    redis.call('HINCRBY', counts, ARGV[9 + 2 * i], ARGV[10 + 2 * i])
  end
  redis.call('EXPIRE', counts, ARGV[8])
end
return n_views
