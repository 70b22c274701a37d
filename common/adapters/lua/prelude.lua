-- Shared by every tasklab script. LEGAL is generated from common/domain/transitions.py and
-- prepended above this line, so Redis enforces exactly the Python table.

-- Create a task: its hash from a JSON object of fields, the first history entry, and its place
-- in the index. Every way a task comes into being (submit, a hand-pushed message claimed by an
-- agent or placed by a scheduler) goes through here, so they all look the same afterwards.
local function create_task(tkey, hkey, index_key, task_id, fields_json, now, actor, reason)
  local args = {}
  for k, v in pairs(cjson.decode(fields_json)) do
    args[#args + 1] = k
    args[#args + 1] = tostring(v)
  end
  redis.call('HSET', tkey, unpack(args))
  local entry = {state = 'PENDING', at = now, actor = actor, epoch = 0, attempt = 1}
  if reason ~= '' then entry.reason = reason end
  redis.call('RPUSH', hkey, cjson.encode(entry))
  redis.call('ZADD', index_key, now, task_id)
end

-- The idempotency key of a task created from a message: true if this message may create the
-- task (no requestId, or the key is now ours), false if the requestId already names one.
-- Every entry path (submit, a hand-pushed message claimed or scheduled) goes through it, so
-- one requestId is one task whichever way it came in.
local function claim_request(request_key, has_request, task_id)
  if has_request ~= '1' then return true end
  return redis.call('SET', request_key, task_id, 'NX') ~= false
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
  local new_attempt = cur_attempt
  if to == 'PENDING' then new_attempt = cur_attempt + 1 end
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
  redis.call('RPUSH', hkey, cjson.encode(entry))
  count(stats_key, 'accepted')
  return {1, 'ok', to, new_attempt}
end
-- --8<-- [end:transition]
