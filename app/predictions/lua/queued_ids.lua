-- queued_ids: the job ids of a page of one row queue's items (workers/sweeper.py), read from
-- each item's header ("<rows>|<deadline ms>|<job id>|...", app/predictions/items.py) without
-- decoding its JSON, so the sweeper learns which jobs still wait without their rows crossing
-- the network. Pages count from the tail: pushes append there and pops take from the head,
-- so an item that stays on the list is in some page (a push between pages shifts items
-- into the next page, never past it), and a short page means the head was reached.
-- KEYS: a queue.
-- ARGV: the page's first position from the tail (1: the last item), its length.
-- Reply: {id...}, head first ('' for an item whose header names no job: queued before it did).
local first, n = tonumber(ARGV[1]), tonumber(ARGV[2])
local items = redis.call('LRANGE', KEYS[1], -(first + n - 1), -first)
local ids = {}
for i = 1, #items do
  ids[i] = string.match(items[i], '^%d+|%d+|([^|{]+)|') or ''
end
return ids
