-- pop_batch: whole items from the head of a row queue (app/rqueue.py RowQueue.pop_batch).
-- Pops until adding the next item would pass max_rows (at least one, unless the pop tops up
-- a batch already begun), atomically, so concurrent workers never split a job. A pop that finds items (re)marks the queue as
-- held. A pop with release = 1 that finds nothing lets go of the queue in the same atomic
-- step, so a push either lands before it (and is popped) or finds the queue free (and
-- wakes a worker): none is stranded.
-- KEYS: queue, active.
-- ARGV: max rows, release (1 or 0), active ttl, top up (1: no item is taken past max rows,
--       not even the first; 0: the first is taken whatever its size, so none is stuck).
-- Reply: {items left on the queue, item...}: the worker knows whether to wake another
--        without a second round trip.
local out, total = {}, 0
local max_rows = tonumber(ARGV[1])
local top_up = ARGV[4] == '1'
while true do
  local item = redis.call('LINDEX', KEYS[1], 0)
  if not item then break end
  local n = tonumber(string.match(item, '^(%d+)|'))
  if (total > 0 or top_up) and total + n > max_rows then break end
  redis.call('LPOP', KEYS[1])
  out[#out + 1] = item
  total = total + n
  if total >= max_rows then break end
end
if #out > 0 then
  redis.call('SET', KEYS[2], '1', 'EX', ARGV[3])
elseif ARGV[2] == '1' then
  redis.call('DEL', KEYS[2])
end
table.insert(out, 1, redis.call('LLEN', KEYS[1]))
return out
