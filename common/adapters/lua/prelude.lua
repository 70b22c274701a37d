-- Shared by every tasklab script. LEGAL is generated from common/domain/transitions.py and
-- prepended above this line, so Redis enforces exactly the Python table.

-- Create a task: its hash from a JSON object of fields, the first history entry, and its place
-- in the index. Every way a task comes into being (submit, a hand-pushed message claimed by an
-- agent or placed by a scheduler, a composite's parent and children) goes through here, so
-- they all look the same afterwards. The first entry records the status the fields give:
-- PENDING for every task but a composite's child, which is created WAITING.
local function create_task(tkey, hkey, index_key, task_id, fields_json, now, actor, reason)
  local args = {}
  local fields = cjson.decode(fields_json)
  for k, v in pairs(fields) do
    args[#args + 1] = k
    args[#args + 1] = tostring(v)
  end
  redis.call('HSET', tkey, unpack(args))
  local state = fields.status or 'PENDING'
  local entry = {state = state, at = now, actor = actor, epoch = 0, attempt = 1}
  if reason ~= '' then entry.reason = reason end
  if fields.traceId then entry.traceId = fields.traceId end
  redis.call('RPUSH', hkey, cjson.encode(entry))
  redis.call('ZADD', index_key, now, task_id)
end

-- The idempotency key of a task about to be created: 'ok' if this request may create it (no
-- requestId, or the key is now ours, stored with the request's fingerprint); else the task
-- the key names, and 'duplicate' (the same request again) or 'conflict' (a different one).
-- Every entry path (submit, a hand-pushed message claimed or scheduled) goes through it, so
-- one requestId is one task, and one request, whichever way it came in.
-- A key with no fingerprint for its task (set before fingerprints were stored, or re-pointed
-- by hand) matches any request, as every key did before.
local function claim_request(request_key, has_request, task_id, fp_key, fingerprint)
  if has_request ~= '1' then return 'ok' end
  if redis.call('SET', request_key, task_id, 'NX') then
    redis.call('HSET', fp_key, 'taskId', task_id, 'fingerprint', fingerprint)
    return 'ok'
  end
  local existing = redis.call('GET', request_key)
  local stored = redis.call('HMGET', fp_key, 'taskId', 'fingerprint')
  if stored[1] == existing and stored[2] and stored[2] ~= fingerprint then
    return 'conflict', existing
  end
  return 'duplicate', existing
end

local function count(stats_key, what)
  redis.call('HINCRBY', stats_key, what, 1)
end

-- Apply side effects only once a transition is accepted, in the same atomic script, so a
-- stale or illegal write can never move a queue entry either. Each effect names its key by
-- index into KEYS, so every key the script touches is declared to Redis.
local function apply_effects(effects)
  for _, e in ipairs(effects or {}) do
    local key = KEYS[e.k]
    if e.op == 'lrem' then
      redis.call('LREM', key, 1, e.v)
    elseif e.op == 'lpush' then
      redis.call('LPUSH', key, e.v)
    elseif e.op == 'rpush' then
      redis.call('RPUSH', key, e.v)
    elseif e.op == 'rpush_all' then
      for _, v in ipairs(e.v) do redis.call('RPUSH', key, v) end
      if e.cap then redis.call('LTRIM', key, -e.cap, -1) end
    elseif e.op == 'zadd' then
      redis.call('ZADD', key, e.score, e.v)
    elseif e.op == 'del' then
      redis.call('DEL', key)
    end
  end
end

-- The one transition function. Checks, in order: the task exists; the caller's attempt is the
-- current one (a zombie agent or a re-dispatched task's old owner carries an older one); the
-- caller's epoch is not older than the task's nor than the scheduler fence (a deposed leader
-- waking from a pause carries an older one); the move is in LEGAL. Only then it writes.
-- --8<-- [start:transition]
local function transition(tkey, hkey, stats_key, fence_key, to, attempt, epoch, actor, now,
                          fields, clear, reason)
  local cur = redis.call('HMGET', tkey, 'status', 'attempt', 'epoch')
  if not cur[1] then
    count(stats_key, 'rejected_missing')
    return {0, 'missing', '', 0}
  end
  local status = cur[1]
  local cur_attempt = tonumber(cur[2]) or 1
  local cur_epoch = tonumber(cur[3]) or 0
  if attempt ~= cur_attempt then
    count(stats_key, 'rejected_stale_attempt')
    return {0, 'stale_attempt', status, cur_attempt}
  end
  local fence = 0
  if fence_key ~= '' then fence = tonumber(redis.call('GET', fence_key) or '0') end
  if epoch < cur_epoch or epoch < fence then
    count(stats_key, 'rejected_stale_epoch')
    return {0, 'stale_epoch', status, cur_attempt}
  end
  if not (LEGAL[status] and LEGAL[status][to]) then
    count(stats_key, 'rejected_illegal')
    return {0, 'illegal', status, cur_attempt}
  end
  -- Going back to PENDING starts a new attempt (NEW_ATTEMPT_ON in transitions.py); a child
  -- released from WAITING starts its first.
  local new_attempt = cur_attempt
  if to == 'PENDING' and status ~= 'WAITING' then new_attempt = cur_attempt + 1 end
  local new_epoch = math.max(epoch, cur_epoch)
  local args = {'status', to, 'attempt', new_attempt, 'epoch', new_epoch, 'updatedAt', now}
  for k, v in pairs(fields or {}) do
    args[#args + 1] = k
    args[#args + 1] = tostring(v)
  end
  redis.call('HSET', tkey, unpack(args))
  if clear and #clear > 0 then redis.call('HDEL', tkey, unpack(clear)) end
  local entry = {state = to, from = status, at = now, actor = actor, epoch = new_epoch,
                 attempt = new_attempt}
  if reason ~= '' then entry.reason = reason end
  -- A transition that starts an attempt's trace names it in the history (tracing.py).
  if fields and fields.traceId then entry.traceId = fields.traceId end
  redis.call('RPUSH', hkey, cjson.encode(entry))
  count(stats_key, 'accepted')
  return {1, 'ok', to, new_attempt}
end
-- --8<-- [end:transition]

-- --8<-- [start:give_back]
-- reap.lua and recover.lua share one key convention, named here once. recover.lua passes the
-- first six: a leader's sweep of queue:scheduling has no agent to ask about.
local function give_back_keys()
  return {list = KEYS[1], task = KEYS[2], history = KEYS[3], target = KEYS[4],
          stats = KEYS[5], fence = KEYS[6], heartbeat = KEYS[7], incarnation = KEYS[8],
          reaper = KEYS[10]}
end

-- Take ONE exact entry off a work list (a dead agent's processing list or inbox, a dead
-- leader's queue:scheduling) and give its task back: to PENDING with attempt + 1, the entry
-- onto `target`. The caller read the list (LRANGE) and calls this once per entry, so every
-- key touched is declared in KEYS, and a crafted taskId reaches nothing outside task:*.
-- k: give_back_keys().  entry: the entry byte for byte.
-- a: {mode, actor, now, reason, from = {STATUS = true}, agent ('' = any owner),
--     taskId (nil for a raw message), attempt (the entry's own, if it names one),
--     epoch, incarnation, maxLost, notRun (true: the attempt never started, so its loss is
--     not counted against the task)}
-- mode says who calls and so what fences the call (checked before anything moves: a refused
-- call changes nothing at all):
--   'leader'    the elected scheduler: its epoch must not be below fence:scheduler, and (when
--               the incarnation key is given) the agent must not have started again since the
--               leader looked at ZooKeeper (see reap.lua).
--   'heartbeat' no leader (the stage 1 reaper, the stage 3 manager): the agent's heartbeat key
--               must be absent and, if given (k.reaper: the reaping agent's own), that one
--               present, both checked in this same script.
--   'own'       the agent itself at start-up, giving back what its previous run left.
-- Returns the transition shape {code, reason, status, attempt}: code 1 = the entry was taken
-- and its task given back ('requeued') or failed ('lost_too_often'); 0 = the entry was dropped
-- as a stale copy ('dropped'), was already gone ('gone'), or the call was refused
-- ('stale_epoch', 'reincarnated', 'alive', 'not_fresh').
local function give_back(k, entry, a)
  if a.mode == 'leader' then
    local fence = tonumber(redis.call('GET', k.fence) or '0')
    if a.epoch < fence then
      count(k.stats, 'rejected_stale_epoch')
      return {0, 'stale_epoch', '', 0}
    end
    if k.incarnation and (redis.call('GET', k.incarnation) or '0') ~= tostring(a.incarnation) then
      count(k.stats, 'rejected_reincarnated')
      return {0, 'reincarnated', '', 0}
    end
  elseif a.mode == 'heartbeat' then
    if redis.call('EXISTS', k.heartbeat) == 1 then return {0, 'alive', '', 0} end
    -- A reaper that is an agent (stage 1) must itself be live on Redis's clock, here: a reap
    -- sent before Redis froze and carried out after it finds every key lapsed, its own too,
    -- while the agents it would reap are alive and about to write theirs again.
    if k.reaper and redis.call('EXISTS', k.reaper) == 0 then return {0, 'not_fresh', '', 0} end
  end
  -- Exactly this entry, once: 0 removed means another reaper (or the agent itself, restarted)
  -- moved it first. That makes a repeated or concurrent call harmless.
  if redis.call('LREM', k.list, 1, entry) == 0 then return {0, 'gone', '', 0} end
  -- A raw message whose claim never ran: nothing was created for it, just put it back (at
  -- the consuming end: it runs next). Also one whose taskId names a key that is not a task
  -- hash ('x:history' is task x's history list): never read as a task, the claim that takes
  -- it again sees the same id and deals with it.
  if not a.taskId or not ({hash = true, none = true})[redis.call('TYPE', k.task).ok] then
    redis.call('RPUSH', k.target, entry)
    return {1, 'requeued', '', 0}
  end
  local cur = redis.call('HMGET', k.task, 'status', 'attempt', 'agentId', 'epoch', 'lostAttempts')
  local status, attempt = cur[1], tonumber(cur[2]) or 1
  if not status or status == 'PENDING' then
    -- Never normalised, or not placed yet: just queue it again.
    redis.call('RPUSH', k.target, entry)
    return {1, 'requeued', status or '', attempt}
  end
  if not a.from[status] or (a.agent ~= '' and cur[3] ~= a.agent)
      or (a.attempt and tonumber(a.attempt) ~= attempt) then
    -- The task moved on (finished, cancelled, placed elsewhere, a newer attempt): this entry
    -- is a stale copy and goes; the task is not touched.
    count(k.stats, 'failover_dropped')
    return {0, 'dropped', status, attempt}
  end
  -- A leader writes with its own epoch, fenced. Anyone else uses the task's own epoch: it
  -- must neither be rejected as older than the dispatching leader nor raise the epoch.
  local epoch, fence_key = tonumber(cur[4]) or 0, ''
  if a.mode == 'leader' then epoch, fence_key = a.epoch, k.fence end
  local fields = {}
  if status == 'RUNNING' and not a.notRun then
    -- The task was running when its agent was lost. Counted, because a task that kills its
    -- agent (out of memory, a fork bomb) would otherwise be re-run forever, taking agent
    -- after agent down with it. A DISPATCHED task never started: its loss is not its fault.
    local lost = (tonumber(cur[5]) or 0) + 1
    fields.lostAttempts = lost
    if a.maxLost and a.maxLost > 0 and lost >= a.maxLost then
      local why = 'lost ' .. lost .. ' times with its agent'
      fields.error, fields.finishedAt = why, a.now
      local r = transition(k.task, k.history, k.stats, fence_key, 'FAILED', attempt, epoch,
                           a.actor, a.now, fields, {}, why)
      if r[1] == 1 then return {1, 'lost_too_often', r[3], r[4]} end
      return {0, r[2], r[3], r[4]}
    end
  end
  -- Not refused: the attempt is the current one, the epoch is the task's or (a leader's)
  -- at least the fence, which no task's epoch exceeds, and every state in `from` may go
  -- back to PENDING. Were it refused, the entry would be gone with the task untouched.
  local r = transition(k.task, k.history, k.stats, fence_key, 'PENDING', attempt, epoch,
                       a.actor, a.now, fields, {'agentId'}, a.reason)
  if r[1] == 1 then
    redis.call('RPUSH', k.target, entry)
    return {1, 'requeued', r[3], r[4]}
  end
  return {0, r[2], r[3], r[4]}
end
-- --8<-- [end:give_back]
