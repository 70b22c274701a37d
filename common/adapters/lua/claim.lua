-- Claim the message this agent just took (BLMOVE, or the chained report's LMOVE): the whole
-- decision is claim_task() (claim_task.lua), which finish_take.lua shares.
-- KEYS: 1 task, 2 history, 3 stats, 4 processing list, 5 index, 6 request key (or a dummy),
--       7 request fingerprint hash (or a dummy)
-- ARGV: 1 raw message, 2 normalised message, 3 hash fields JSON (for creation; '' = only
--       claim a task that exists), 4 agentId,
--       5 now, 6 taskId, 7 track (1 = keep the message on the processing list),
--       8 dispatched attempt ('' for a stage 1 message), 9 dispatched epoch,
--       10 has a requestId (1/0), 11 the request's fingerprint
return claim_task(
  {task = KEYS[1], history = KEYS[2], stats = KEYS[3], processing = KEYS[4], index = KEYS[5],
   request = KEYS[6], fingerprint = KEYS[7]},
  {raw = ARGV[1], message = ARGV[2], fields = ARGV[3], agent = ARGV[4], now = ARGV[5],
   task_id = ARGV[6], track = ARGV[7], attempt = ARGV[8], epoch = ARGV[9],
   has_request = ARGV[10], fingerprint = ARGV[11]})
