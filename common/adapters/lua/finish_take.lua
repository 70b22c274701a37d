-- A busy agent's steady state: report the task it ran (exactly what transition.lua does) and
-- move its next message to its processing list, in one round trip. The move does not depend
-- on the report's outcome, and it touches only the two lists, whose names arrive in KEYS: the
-- next task's own keys are not known until its message is read, so it is claimed by
-- claim.lua, which receives them.
-- KEYS: 1 task, 2 history, 3 stats, 4 fence, 5 processing, 6 logs, 7 delayed, 8 source
-- ARGV: 1 transition JSON (as transition.lua), 2 the finished task's entry, dropped from the
--       processing list if the report is refused (a late report: the copy is stale either way)
-- Returns {transition result, the next message or false}.
local a = cjson.decode(ARGV[1])
local fence_key = ''
if a.fenced then fence_key = KEYS[4] end
local r = transition(KEYS[1], KEYS[2], KEYS[3], fence_key, a.to, a.attempt, a.epoch, a.actor,
                     a.now, a.fields, a.clear, a.reason or '')
if r[1] == 1 then
  apply_effects(a.effects)
elseif ARGV[2] ~= '' then
  redis.call('LREM', KEYS[5], 1, ARGV[2])
end
return {r, redis.call('LMOVE', KEYS[8], KEYS[5], 'RIGHT', 'LEFT')}
