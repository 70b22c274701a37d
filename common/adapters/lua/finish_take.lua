-- A busy agent's steady state: report the task it ran (exactly what transition.lua does), then
-- take its next message and, when it can, claim it, all in one round trip.
-- A script touches only keys it was given, and the next task's keys are known only once its
-- message is read. So the agent passes the keys of the messages the previous call saw at the
-- queue's tail (the peek): if the tail is still one of them, it is moved and claimed here, by
-- the same claim_task() as claim.lua. Otherwise (another agent took the peeked messages, the
-- queue emptied and refilled, or the tail is not a plain task id) the tail is only moved and
-- claim.lua claims it, as before. Either way the message goes from the queue to the processing
-- list in one LMOVE, so it is always on exactly one of the two.
-- KEYS: 1 task, 2 history, 3 stats, 4 fence, 5 processing, 6 logs, 7 delayed, 8 source,
--       9 index, 10 request key (a dummy), 11 request fingerprint hash (a dummy),
--       then per peeked message i (from 1): 10 + 2i its task, 11 + 2i its history
-- ARGV: 1 transition JSON (as transition.lua), 2 the finished task's entry, dropped from the
--       processing list if the report is refused (a late report: the copy is stale either way),
--       3 agentId, 4 now, 5 how many tail messages to peek for the next call (0 = none),
--       then per peeked message i: 2 + 4i the message, 3 + 4i its taskId, 4 + 4i the attempt
--       and 5 + 4i the epoch it was dispatched with (both '' for a stage 1 message)
-- Returns {transition result, the next message or false, its claim (claim_task's answer) or
-- false if it was not claimed here, the tail messages peeked (oldest last)}.
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
-- Which peeked message, if any, is at the tail now: compared byte for byte, so a message is
-- claimed with the keys of the very taskId the agent read out of it.
local tail = redis.call('LINDEX', KEYS[8], -1)
local peeked = 0
if tail then
  for i = 1, (#ARGV - 5) / 4 do
    if ARGV[2 + 4 * i] == tail then
      peeked = i
      break
    end
  end
end
local moved = redis.call('LMOVE', KEYS[8], KEYS[5], 'RIGHT', 'LEFT')
local claimed = false
if moved and peeked > 0 then
  claimed = claim_task(
    {task = KEYS[10 + 2 * peeked], history = KEYS[11 + 2 * peeked], stats = KEYS[3],
     processing = KEYS[5], index = KEYS[9], request = KEYS[10], fingerprint = KEYS[11]},
    {raw = moved, message = moved, fields = '', agent = ARGV[3], now = ARGV[4],
     task_id = ARGV[3 + 4 * peeked], track = '1', attempt = ARGV[4 + 4 * peeked],
     epoch = ARGV[5 + 4 * peeked],
     has_request = '0', fingerprint = ''})
end
local peek = {}
local n = tonumber(ARGV[5]) or 0
if n > 0 then peek = redis.call('LRANGE', KEYS[8], -n, -1) end
return {r, moved, claimed, peek}
