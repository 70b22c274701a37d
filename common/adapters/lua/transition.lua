-- KEYS: 1 task, 2 history, 3 stats, 4 fence (or a dummy), 5.. keys named by effects (the
--       archive:outbox key among them when `outbox` is given)
-- ARGV: 1 JSON {to, attempt, epoch, actor, now, fields, clear, reason, fenced, effects,
--       outbox, source}
-- outbox (optional): the KEYS position of archive:outbox, for a final state that no agent
-- reports (RedisTaskStore.transition with a final `to`, e.g. Dispatcher.fail): its archive
-- entry is appended in the same step (archive_outbox.lua). Agents' reports (RedisOutcomeWriter)
-- give none: they reach the archive on the bus.
local a = cjson.decode(ARGV[1])
local fence_key = ''
if a.fenced then fence_key = KEYS[4] end
local r = transition(KEYS[1], KEYS[2], KEYS[3], fence_key, a.to, a.attempt, a.epoch, a.actor,
                     a.now, a.fields, a.clear, a.reason or '')
if r[1] == 1 then
  apply_effects(a.effects)
  if a.outbox then
    local fields = a.fields or {}
    archive_outbox(KEYS[a.outbox], KEYS[1], a.actor, a.source, fields.error, fields.result)
  end
end
return r
