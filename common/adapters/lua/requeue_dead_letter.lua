-- Requeue one dead letter: its message back on queue:pending, the entry off the list, as one
-- step, once. Two operators clicking at the same moment (or a client retrying after a lost
-- answer) run this twice: the marker makes the second a no-op, so the message is pushed once.
-- KEYS: 1 dead-letter list, 2 queue:pending, 3 the entry's requeued marker
-- ARGV: 1 the entry's exact text, 2 its message, 3 the marker's TTL (seconds)
-- Returns 1 requeued now, 2 requeued before, 0 no such entry on the list.
if redis.call('EXISTS', KEYS[3]) == 1 then return 2 end
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return 0 end
redis.call('LPUSH', KEYS[2], ARGV[2])
redis.call('SET', KEYS[3], '1', 'EX', tonumber(ARGV[3]))
return 1
