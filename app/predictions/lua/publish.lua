-- publish: a finished batch in one command (app/rqueue.py publish_results): each row's
-- output into the cache, each job's view under its result key and onto its done list
-- (long-polls BLMOVE that list onto itself). One call instead of a pipeline of 1 + 3 per
-- job commands: redis-py spends more time packing each command than Redis running it.
-- KEYS: cache keys..., then per job its result key and done key.
-- ARGV: cache ttl, result ttl, done-list ttl, number of cache keys, then one value per
--       cache key, then one view per job.
-- Reply: how many jobs were published.
local cache_ttl, result_ttl, done_ttl = ARGV[1], ARGV[2], ARGV[3]
local n_cache = tonumber(ARGV[4])
for i = 1, n_cache do
  redis.call('SET', KEYS[i], ARGV[4 + i], 'EX', cache_ttl)
end
local job = 0
for i = n_cache + 1, #KEYS, 2 do
  local view = ARGV[4 + n_cache + job + 1]
  redis.call('SET', KEYS[i], view, 'EX', result_ttl)
  redis.call('RPUSH', KEYS[i + 1], view)
  redis.call('EXPIRE', KEYS[i + 1], done_ttl)
  job = job + 1
end
return job
