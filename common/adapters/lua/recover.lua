-- Give back one entry a dead or deposed leader left on queue:scheduling (it took the message
-- but never dispatched it); run by the current leader when it is elected and whenever it has
-- no message of its own in flight. Nothing is lost and nothing is placed twice: a SCHEDULED
-- task goes back to PENDING with attempt + 1 (so the old leader's dispatch, should it still
-- come, is stale twice over), a PENDING or hash-less one is simply queued again, and a copy
-- whose task has moved on is dropped. A caller whose epoch is below the fence changes nothing.
-- KEYS: 1 queue:scheduling, 2 task, 3 history, 4 pending queue, 5 stats, 6 fence
-- ARGV: 1 the exact entry, 2 JSON options (see give_back in prelude.lua)
-- Returns {code, reason, status, attempt} (see give_back).
local a = cjson.decode(ARGV[2])
a.mode, a.agent = 'leader', ''
a.from = {SCHEDULED = true}
a.reason = 'scheduler lost it in flight'
return give_back(give_back_keys(), ARGV[1], a)
