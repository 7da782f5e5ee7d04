-- pop_batch: whole items from the head of a version's row queues (app/predictions/queue.py
-- RowQueue.pop_batch), one queue per priority, strictly highest first: a lower queue is
-- read only when every higher one is empty, and a higher item that does not fit ends the
-- batch (a batch may mix normal and low, never taking a lower one while a higher one waits;
-- one that holds high rows takes no lower ones).
-- Pops until adding the next item would pass max_rows (at least one, unless the pop tops up
-- a batch already begun), atomically, so concurrent workers never split a job. An item
-- whose job has a cancel mark is dropped (its row says cancelled already); an item past its
-- deadline (Redis's clock) is set aside for the caller to end, never run. A pop that finds
-- items (re)marks the queue as held. A pop with release = 1 that finds nothing lets go of
-- the queue in the same atomic step, so a push either lands before it (and is popped) or
-- finds the queue free (and wakes a worker): none is stranded.
-- An item is "<rows>|<deadline ms>|<job id>|<json>", or "<rows>|<json>" (queued before
-- deadlines existed): app/predictions/items.py.
-- KEYS: active, then the queues, highest priority first.
-- ARGV: max rows, release (1 or 0), active ttl, top up (1: no item is taken past max rows,
--       not even the first; 0: the first is taken whatever its size, so none is stuck),
--       cancel mark prefix, an item to put back at the head of queue number ARGV[7] first
--       ('' and 0: none; what a blocking wait took).
-- Reply: {items left on the queues, n expired, n expired items..., items...}: the worker
--        knows whether to wake another without a second round trip.
local MOST_EXPIRED = 1000 -- per call, so a backlog of expired items never makes one long script
local max_rows = tonumber(ARGV[1])
local top_up = ARGV[4] == '1'
local mark = ARGV[5]
if ARGV[6] ~= '' then redis.call('LPUSH', KEYS[1 + tonumber(ARGV[7])], ARGV[6]) end
local clock = redis.call('TIME')
local now_ms = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local out, expired, total, full = {}, {}, 0, false
for q = 2, #KEYS do
  while not full do
    local item = redis.call('LINDEX', KEYS[q], 0)
    if not item then break end
    local n, deadline, id = string.match(item, '^(%d+)|(%d+)|([^|{]+)|')
    n = tonumber(n or string.match(item, '^(%d+)|'))
    if id and redis.call('EXISTS', mark .. id) == 1 then
      redis.call('LPOP', KEYS[q])
    elseif deadline and deadline ~= '0' and tonumber(deadline) <= now_ms then
      redis.call('LPOP', KEYS[q])
      expired[#expired + 1] = item
      full = #expired >= MOST_EXPIRED
    elseif (total > 0 or top_up) and total + n > max_rows then
      full = true
    else
      redis.call('LPOP', KEYS[q])
      out[#out + 1] = item
      total = total + n
      full = total >= max_rows
    end
  end
  -- A batch holding high rows is not topped up with lower ones: a high row then waits for the
  -- batch in progress and a small batch of its own, not for a full batch of low work.
  if full or (q == 2 and #out > 0) then break end
end
if #out > 0 then
  redis.call('SET', KEYS[1], '1', 'EX', ARGV[3])
elseif ARGV[2] == '1' then
  redis.call('DEL', KEYS[1])
end
local left = 0
for q = 2, #KEYS do left = left + redis.call('LLEN', KEYS[q]) end
local reply = {left, #expired}
for i = 1, #expired do reply[#reply + 1] = expired[i] end
for i = 1, #out do reply[#reply + 1] = out[i] end
return reply
