"""The Lua scripts, one per operation (docs/redis.md, "The scripts"), and their loader.

Redis runs a script to its end before any other command, so each one is a critical section over
the keys of its queue. Every script gets the same ``KEYS`` (``QueueKeys.all()``) and the shared
prelude, so the start steps are one function used by **start**, **finish** (the hand-off) and
**claim**. Time is always the server's ``TIME``: one clock for every machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

PRELUDE = r"""
local K_META, K_STREAM, K_PEND, K_DELAYED, K_DPAY, K_RUN, K_DEFER, K_INACTIVE, K_ACTIVE,
      K_LAST, K_STATS, K_DONE =
      KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9],
      KEYS[10], KEYS[11], KEYS[12]
local GROUP = 'awq'

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- the settings are fixed at the queue's first declaration: read once per script
local META = nil
local function meta_num(field)
  if META == nil then
    local v = redis.call('HMGET', K_META, 'max_active', 'ordered', 'max_pending')
    META = {max_active = tonumber(v[1] or '0') or 0, ordered = tonumber(v[2] or '0') or 0,
            max_pending = tonumber(v[3] or '0') or 0}
  end
  return META[field]
end

-- queueing is refused on a destroyed queue, and on a draining one unless the caller runs an
-- item of this queue (chained work, R14)
local function check_state(chained)
  local st = redis.call('HGET', K_META, 'state')
  if st == false or st == 'destroyed' then
    return redis.error_reply('AWQ destroyed')
  end
  if st == 'draining' and chained ~= '1' then
    return redis.error_reply('AWQ draining')
  end
  return nil
end

local function check_room()
  local mp = meta_num('max_pending')
  if mp > 0 and redis.call('HLEN', K_PEND) >= mp then
    return redis.error_reply('AWQ full')
  end
  return nil
end

-- the payload of an armed item: '<len(f)>:' .. f .. a, binary safe
local function pack(f, a) return tostring(#f) .. ':' .. f .. a end
local function unpack_payload(p)
  local c = string.find(p, ':', 1, true)
  local n = tonumber(string.sub(p, 1, c - 1))
  return string.sub(p, c + 1, c + n), string.sub(p, c + n + 1)
end

local function add_entry(k, f, a, now)
  local id = redis.call('XADD', K_STREAM, '*', 'k', k, 'f', f, 'a', a, 'q', tostring(now))
  redis.call('HSET', K_PEND, k, id)
  redis.call('HINCRBY', K_STATS, 'queued', 1)
  return id
end

local function entry_fields(id)
  local e = redis.call('XRANGE', K_STREAM, id, id)
  if #e == 0 then return nil end
  local out = {}
  local flat = e[1][2]
  for i = 1, #flat, 2 do out[flat[i]] = flat[i + 1] end
  return out
end

local function parse_run(r)
  local a, b, c = string.match(r, '^(%S+) (%S+) (%S+)$')
  return a, b, tonumber(c)
end

local function drop_entry(id)
  redis.call('XACK', K_STREAM, GROUP, id)
  redis.call('XDEL', K_STREAM, id)
end

-- Per-script caches of what every start and finish touches, written back once by commit()
-- (each script that starts or finishes ends with it): a redis.call from Lua costs about a
-- microsecond beyond its command, so a batch of starts and finishes pays for the active count,
-- the statistics and the acks once instead of once per item.
local ACTIVE, ACTIVE0 = nil, nil
local STATS_D = {}
local ACKS = {}
local DEFER_EMPTY = nil  -- nil: not known yet
local INACTIVE_EMPTY = false

local function active()
  if ACTIVE == nil then
    ACTIVE = tonumber(redis.call('GET', K_ACTIVE) or '0') or 0
    ACTIVE0 = ACTIVE
  end
  return ACTIVE
end

local function bump(name, n) STATS_D[name] = (STATS_D[name] or 0) + n end

local function deferred_for(k)
  if DEFER_EMPTY == nil then DEFER_EMPTY = redis.call('HLEN', K_DEFER) == 0 end
  if DEFER_EMPTY then return false end
  return redis.call('HGET', K_DEFER, k)
end

-- The group's last-delivered ID: every entry after it is unread, every entry up to it was read
-- and is in a worker's PEL until it finishes or is skipped (XACK).
local function last_delivered()
  if redis.call('EXISTS', K_STREAM) == 0 then return '0-0' end
  local groups = redis.call('XINFO', 'GROUPS', K_STREAM)
  for _, g in ipairs(groups) do
    local name, ld = nil, nil
    for i = 1, #g, 2 do
      if g[i] == 'name' then name = g[i + 1] end
      if g[i] == 'last-delivered-id' then ld = g[i + 1] end
    end
    if name == GROUP then return ld end
  end
  return '0-0'
end

-- A finished entry is acked, not XDELed (XDEL scans its stream node: ~15 us an entry, more than
-- the rest of a start and a finish together). The stream is cut instead by whole nodes below the
-- oldest entry that may still be needed: the oldest in the PEL (read, not finished), else the
-- last delivered one (everything before it is finished or skipped; everything after it unread).
local function trim()
  if redis.call('XLEN', K_STREAM) < 200 then return end
  local pel = redis.call('XPENDING', K_STREAM, GROUP)
  local minid = pel[2]
  if not minid then minid = last_delivered() end
  redis.call('XTRIM', K_STREAM, 'MINID', '~', minid)
end

local function commit()
  if ACTIVE ~= nil and ACTIVE ~= ACTIVE0 then redis.call('SET', K_ACTIVE, ACTIVE) end
  for name, n in pairs(STATS_D) do redis.call('HINCRBY', K_STATS, name, n) end
  for i = 1, #ACKS, 500 do
    redis.call('XACK', K_STREAM, GROUP, unpack(ACKS, i, math.min(i + 499, #ACKS)))
  end
  if #ACKS > 0 then trim() end
end

-- An entry is live (flush and drain wait for it) while it is unread, or read and in the PEL.
local function live(id, ld)
  if #redis.call('XPENDING', K_STREAM, GROUP, id, id, 1) > 0 then return true end
  return #redis.call('XRANGE', K_STREAM, '(' .. ld, id, 'COUNT', 1) > 0 and
         #redis.call('XRANGE', K_STREAM, id, id) > 0
end

-- moves the armed items that are due (all of them with everything) to the stream; returns
-- {how many, ms until the next due time or -1}
local function promote(now, everything)
  -- the earliest armed item first: most takes find nothing due, and this one call says so
  local first = redis.call('ZRANGE', K_DELAYED, 0, 0, 'WITHSCORES')
  if #first == 0 then return {0, -1} end
  if not everything and tonumber(first[2]) > now then
    return {0, tonumber(first[2]) - now}
  end
  local upto = now
  if everything then upto = '+inf' end
  local due = redis.call('ZRANGEBYSCORE', K_DELAYED, '-inf', upto, 'LIMIT', 0, 1000)
  for _, k in ipairs(due) do
    local p = redis.call('HGET', K_DPAY, k)
    redis.call('ZREM', K_DELAYED, k)
    redis.call('HDEL', K_DPAY, k)
    if p and redis.call('HGET', K_PEND, k) == 'd' then
      local f, a = unpack_payload(p)
      add_entry(k, f, a, now)
    end
  end
  local nxt = redis.call('ZRANGE', K_DELAYED, 0, 0, 'WITHSCORES')
  local wait = -1
  if #nxt > 0 then wait = math.max(0, tonumber(nxt[2]) - now) end
  return {#due, wait}
end

-- the start steps (docs/redis.md, **start**); front: an 'inactive' answer goes back to the head
-- of the list (the hand-off of finish took it from there, FIFO must hold); own: the entry was
-- just read by this consumer (XREADGROUP), so it is in its PEL already and needs no XCLAIM
local function try_start(id, k, consumer, lease, now, front, own)
  local r = redis.call('HGET', K_RUN, k)
  local rid, rcons, rdl
  if r then rid, rcons, rdl = parse_run(r) end
  if rid == id then
    return 'skip'  -- this very instance runs already (a retry, or a claim of a live run)
  end
  if redis.call('HGET', K_PEND, k) ~= id then
    drop_entry(id)  -- cancelled, or superseded by mod_delayed_work
    return 'skip'
  end
  -- R6 before R3: only the next entry in order may be deferred, because the finish that hands
  -- a deferred entry on has nowhere to keep one that must still wait (it would be left to the
  -- lease); a 'wait' answer stays with its worker, which retries it
  if meta_num('ordered') == 1 then
    local last = redis.call('GET', K_LAST)
    local from = '-'
    if last then from = '(' .. last end
    local first = redis.call('XRANGE', K_STREAM, from, '+', 'COUNT', 1)
    if #first == 0 or first[1][1] ~= id then
      return 'wait'  -- R6: an earlier entry has not started yet
    end
  end
  if r and rdl > now then
    redis.call('HSET', K_DEFER, k, id)  -- R3: the worker running k runs it next
    DEFER_EMPTY = false
    return 'deferred'
  end
  local act = active()
  if r then
    act = act - 1  -- an expired run (its worker died): this start inherits its slot
  end
  local ma = meta_num('max_active')
  if ma > 0 and act >= ma then
    -- an entry read just now cannot be on the list yet (LPOS is O(length)); a claimed or
    -- retried one may be
    if own or not redis.call('LPOS', K_INACTIVE, id) then
      if front then redis.call('LPUSH', K_INACTIVE, id)
      else redis.call('RPUSH', K_INACTIVE, id) end
      INACTIVE_EMPTY = false
    end
    return 'inactive'  -- R7
  end
  redis.call('HDEL', K_PEND, k)  -- R2: the pending bit clears when the run starts
  redis.call('HSET', K_RUN, k, id .. ' ' .. consumer .. ' ' .. tostring(now + lease))
  if not r then ACTIVE = act + 1 end
  if meta_num('ordered') == 1 then redis.call('SET', K_LAST, id) end
  bump('started', 1)
  -- the runner owns the entry in the PEL from now on (renew, claim after its death)
  if not own then redis.call('XCLAIM', K_STREAM, GROUP, consumer, 0, id, 'JUSTID') end
  return 'run'
end

-- what a worker with ``count`` free slots does (docs/redis.md, **take**): promote the due
-- items, read up to ``count`` new entries (XREADGROUP without BLOCK: a script never blocks),
-- the start steps on each in stream order. Appends to ``out``: ms until the next due time or
-- -1, how many entries were read, then {answer, id, key, f, a} per 'run' / 'wait' answer.
local function take(consumer, lease, count, now, out)
  local pr = promote(now, false)
  table.insert(out, pr[2])
  local at = #out + 1
  table.insert(out, 0)
  if count <= 0 then return out end
  local resp = redis.call('XREADGROUP', 'GROUP', GROUP, consumer, 'COUNT', count,
                          'STREAMS', K_STREAM, '>')
  if not resp then return out end
  local entries = resp[1][2]
  out[at] = #entries
  for _, e in ipairs(entries) do
    local id, flat = e[1], e[2]
    if flat then
      local fields = {}
      for i = 1, #flat, 2 do fields[flat[i]] = flat[i + 1] end
      local ans = try_start(id, fields['k'], consumer, lease, now, false, true)
      if ans == 'run' or ans == 'wait' then
        table.insert(out, {ans, id, fields['k'], fields['f'], fields['a']})
      end
    end
  end
  return out
end

-- the finish steps (docs/redis.md, **finish**) without the message on ``done``; returns the
-- instance handed to this consumer ({id, key, f, a}) or nil
local function finish(id, k, consumer, outcome, lease, handoff, now)
  table.insert(ACKS, id)
  local r = redis.call('HGET', K_RUN, k)
  if r then
    local rid = parse_run(r)
    if rid == id then
      redis.call('HDEL', K_RUN, k)
      if active() > 0 then ACTIVE = ACTIVE - 1 end
    end
  end
  if outcome == 'ok' then bump('completed', 1) else bump('failed', 1) end
  if handoff ~= '1' then return nil end
  -- the hand-off: the instance waiting for exactly this slot starts here, in the same script,
  -- so no other worker can take the slot in between
  local nxt = deferred_for(k)
  if nxt then
    redis.call('HDEL', K_DEFER, k)
    local fields = entry_fields(nxt)
    if fields and try_start(nxt, k, consumer, lease, now, false, false) == 'run' then
      return {nxt, k, fields['f'], fields['a']}
    end
  end
  while not INACTIVE_EMPTY do
    local h = redis.call('LPOP', K_INACTIVE)
    if not h then INACTIVE_EMPTY = true break end
    local fields = entry_fields(h)
    if fields then
      local ans = try_start(h, fields['k'], consumer, lease, now, true, false)
      if ans == 'run' then return {h, fields['k'], fields['f'], fields['a']} end
      if ans == 'inactive' then break end
      if ans == 'wait' then redis.call('LPUSH', K_INACTIVE, h) INACTIVE_EMPTY = false break end
    end
  end
  return nil
end
"""

DECLARE = r"""
if redis.call('EXISTS', K_META) == 0 then
  redis.call('HSET', K_META, 'max_active', ARGV[1], 'ordered', ARGV[2], 'max_pending', ARGV[3],
             'state', 'live', 'created', tostring(now_ms()))
end
local st = redis.call('HGET', K_META, 'state')
if st ~= 'destroyed' then
  redis.pcall('XGROUP', 'CREATE', K_STREAM, GROUP, '0', 'MKSTREAM')  -- BUSYGROUP: already there
end
return st
"""

QUEUE = r"""
local k, f, a, chained = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local e = check_state(chained)
if e then return e end
if redis.call('HEXISTS', K_PEND, k) == 1 then return 0 end  -- R1
e = check_room()
if e then return e end
add_entry(k, f, a, now_ms())
return 1
"""

# ARGV: chained, then (key, f, a) per work. The batch is one critical section: the state and
# the bound are checked once for all of it, and nothing is queued if either refuses. Returns one
# 1/0 per work, in order (R1 per item: a key already pending, or seen earlier in this batch,
# answers 0 and changes nothing).
QUEUE_MANY = r"""
local e = check_state(ARGV[1])
if e then return e end
local n = (#ARGV - 1) / 3
local out, seen, new = {}, {}, 0
for i = 0, n - 1 do
  local k = ARGV[2 + 3 * i]
  if seen[k] or redis.call('HEXISTS', K_PEND, k) == 1 then
    out[i + 1] = 0
  else
    seen[k] = true
    out[i + 1] = 1
    new = new + 1
  end
end
local mp = meta_num('max_pending')
if mp > 0 and new > 0 and redis.call('HLEN', K_PEND) + new > mp then
  return redis.error_reply('AWQ full')
end
local now = tostring(now_ms())
for i = 0, n - 1 do
  if out[i + 1] == 1 then
    local k = ARGV[2 + 3 * i]
    local id = redis.call('XADD', K_STREAM, '*', 'k', k, 'f', ARGV[3 + 3 * i], 'a', ARGV[4 + 3 * i],
                          'q', now)
    redis.call('HSET', K_PEND, k, id)
  end
end
if new > 0 then redis.call('HINCRBY', K_STATS, 'queued', new) end
return out
"""

QUEUE_DELAYED = r"""
local k, f, a, delay, chained = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local e = check_state(chained)
if e then return e end
if redis.call('HEXISTS', K_PEND, k) == 1 then return 0 end  -- R1, R8
e = check_room()
if e then return e end
redis.call('HSET', K_PEND, k, 'd')
redis.call('ZADD', K_DELAYED, now_ms() + delay, k)
redis.call('HSET', K_DPAY, k, pack(f, a))
return 1
"""

MOD_DELAYED = r"""
local k, f, a, delay, chained = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local e = check_state(chained)
if e then return e end
local now = now_ms()
local p = redis.call('HGET', K_PEND, k)
local was = 0
if p == 'd' then
  if delay == 0 then
    local pf, pa = unpack_payload(redis.call('HGET', K_DPAY, k))
    redis.call('ZREM', K_DELAYED, k)
    redis.call('HDEL', K_DPAY, k)
    add_entry(k, pf, pa, now)
  else
    redis.call('ZADD', K_DELAYED, 'XX', now + delay, k)
  end
  return 1
end
if p then
  -- queued and not started: take the entry back (R9); delay 0 queues it again at the tail
  local fields = entry_fields(p)
  if fields then f, a = fields['f'], fields['a'] end
  redis.call('XACK', K_STREAM, GROUP, p)  -- read but not started: out of its reader's PEL
  redis.call('XDEL', K_STREAM, p)
  redis.call('LREM', K_INACTIVE, 0, p)
  if redis.call('HGET', K_DEFER, k) == p then redis.call('HDEL', K_DEFER, k) end
  redis.call('HDEL', K_PEND, k)
  was = 1
else
  e = check_room()
  if e then return e end
end
if delay == 0 then
  add_entry(k, f, a, now)
else
  redis.call('HSET', K_PEND, k, 'd')
  redis.call('ZADD', K_DELAYED, now + delay, k)
  redis.call('HSET', K_DPAY, k, pack(f, a))
end
return was
"""

# ARGV[1] == '1' fires every armed item whatever its due time (destroy, R14).
# Returns {how many fired, ms until the next due time or -1}.
PROMOTE = r"""
return promote(now_ms(), ARGV[1] == '1')
"""

CANCEL = r"""
local k = ARGV[1]
local p = redis.call('HGET', K_PEND, k)
if not p then return 0 end
if p == 'd' then
  redis.call('ZREM', K_DELAYED, k)
  redis.call('HDEL', K_DPAY, k)
else
  redis.call('XACK', K_STREAM, GROUP, p)  -- read but not started: out of its reader's PEL
  redis.call('XDEL', K_STREAM, p)
  redis.call('LREM', K_INACTIVE, 0, p)
  if redis.call('HGET', K_DEFER, k) == p then redis.call('HDEL', K_DEFER, k) end
end
redis.call('HDEL', K_PEND, k)
redis.call('HINCRBY', K_STATS, 'cancelled', 1)
redis.call('PUBLISH', K_DONE, 'c')
return 1
"""

# ARGV: id, key, consumer, lease_ms. Returns the answer of the start steps.
START = r"""
local ans = try_start(ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), now_ms(), false, false)
commit()
return ans
"""

# ARGV: consumer, lease_ms, just read ('1': the entries come from this consumer's read a moment
# ago, so they are in its PEL; '0': they may have been claimed since), then (id, key) per entry
# this consumer read. The start steps for each, in order: the same answers as one **start**
# per entry, in one critical section. Returns one answer per entry.
START_MANY = r"""
local consumer, lease, own, now = ARGV[1], tonumber(ARGV[2]), ARGV[3] == '1', now_ms()
local out = {}
for i = 4, #ARGV, 2 do
  table.insert(out, try_start(ARGV[i], ARGV[i + 1], consumer, lease, now, false, own))
end
commit()
return out
"""

# ARGV: consumer, lease_ms, count. The **take** steps (``take`` in the prelude). Returns {ms
# until the next due time or -1, how many entries were read, the ID of the stream's last entry
# ('0-0' for none: a reader that found nothing blocks on XREAD after it, so that an entry added
# after this script wakes it), then {answer, id, key, f, a} for each entry answered 'run' or
# 'wait'} (the others need nothing of the worker).
TAKE = r"""
local out = take(ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), now_ms(), {})
commit()
local last = redis.call('XREVRANGE', K_STREAM, '+', '-', 'COUNT', 1)
if #last > 0 then table.insert(out, 3, last[1][1]) else table.insert(out, 3, '0-0') end
return out
"""

# ARGV: id, key, consumer, outcome ('ok' / 'fail'), lease_ms, hand-off ('1': take the next
# instance; '0': a stopping worker, the instance waits for another worker).
# Returns {} or the next instance this worker runs at once: {id, key, f, a}.
FINISH = r"""
local nxt = finish(ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5]), ARGV[6], now_ms())
commit()
redis.call('PUBLISH', K_DONE, 'f')
return nxt or {}
"""

# ARGV: consumer, lease_ms, hand-off, free slots, then (id, key, outcome) per finished
# instance: the **finish** steps for each, in order, and one message on ``done`` for the batch
# (flushers re-check the stream, so one is enough); then, with the slots the hand-offs left
# (free slots - hand-offs), the **take** steps, so a busy worker pays one script per turn.
# Returns as **take**, with the hand-offs first among the 'run' answers.
FINISH_MANY = r"""
local consumer, lease, handoff, free = ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local now = now_ms()
local handed = {}
for i = 5, #ARGV, 3 do
  local nxt = finish(ARGV[i], ARGV[i + 1], consumer, ARGV[i + 2], lease, handoff, now)
  if nxt then table.insert(handed, {'run', nxt[1], nxt[2], nxt[3], nxt[4]}) end
end
local out = take(consumer, lease, free - #handed, now, {})
for _, h in ipairs(handed) do table.insert(out, h) end
commit()
redis.call('PUBLISH', K_DONE, 'f')
return out
"""

# ARGV: consumer, lease_ms, then (id, key) per run of this consumer. Returns one 1 per run, or
# 0 where the lease was lost.
RENEW = r"""
local consumer, lease, now = ARGV[1], tonumber(ARGV[2]), now_ms()
local out = {}
for i = 3, #ARGV, 2 do
  local id, k = ARGV[i], ARGV[i + 1]
  local r = redis.call('HGET', K_RUN, k)
  local ok = 0
  if r then
    local rid, rcons = parse_run(r)
    if rid == id and rcons == consumer then
      redis.call('HSET', K_RUN, k, id .. ' ' .. consumer .. ' ' .. tostring(now + lease))
      redis.call('XCLAIM', K_STREAM, GROUP, consumer, 0, id, 'JUSTID')
      ok = 1
    end
  end
  table.insert(out, ok)
end
return out
"""

# ARGV: consumer, lease_ms, count. Returns a flat list of {answer, id, key, f, a} for the
# instances this consumer runs now: 'rerun' (a run cut by a dead worker) or 'run'.
CLAIM = r"""
local consumer, lease, count = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local now = now_ms()
local res = redis.call('XAUTOCLAIM', K_STREAM, GROUP, consumer, lease, '0-0', 'COUNT', count)
local out = {}
for _, e in ipairs(res[2]) do
  local id = e[1]
  local fields = {}
  local flat = e[2]
  for i = 1, #flat, 2 do fields[flat[i]] = flat[i + 1] end
  local k = fields['k']
  if k then
    local r = redis.call('HGET', K_RUN, k)
    local rid, rcons, rdl
    if r then rid, rcons, rdl = parse_run(r) end
    if rid == id then
      if rdl <= now then
        redis.call('HSET', K_RUN, k, id .. ' ' .. consumer .. ' ' .. tostring(now + lease))
        bump('redelivered', 1)
        table.insert(out, {'rerun', id, k, fields['f'], fields['a']})
      end
    elseif try_start(id, k, consumer, lease, now, false, false) == 'run' then
      table.insert(out, {'run', id, k, fields['f'], fields['a']})
    end
  end
end
commit()
return out
"""

# The flush barrier: the stream's last-generated ID ('0-0' when nothing was ever queued).
BARRIER = r"""
if redis.call('EXISTS', K_STREAM) == 0 then return '0-0' end
local info = redis.call('XINFO', 'STREAM', K_STREAM)
for i = 1, #info, 2 do
  if info[i] == 'last-generated-id' then return info[i + 1] end
end
return '0-0'
"""

# ARGV: a barrier ID. Returns 1 once no live entry with ID <= it is left (R13): none in the
# PEL (read and not finished) and none unread (after the last delivered ID).
BARRIER_DONE = r"""
if redis.call('EXISTS', K_STREAM) == 0 then return 1 end
if #redis.call('XPENDING', K_STREAM, GROUP, '-', ARGV[1], 1) > 0 then return 0 end
if #redis.call('XRANGE', K_STREAM, '(' .. last_delivered(), ARGV[1], 'COUNT', 1) > 0 then
  return 0
end
return 1
"""

# ARGV: key. Returns the entry IDs flush_work waits for: the running and the pending instance.
WORK_IDS = r"""
local k = ARGV[1]
local out = {}
local r = redis.call('HGET', K_RUN, k)
if r then local rid = parse_run(r) table.insert(out, rid) end
local p = redis.call('HGET', K_PEND, k)
if p and p ~= 'd' then table.insert(out, p) end
return out
"""

# ARGV: entry IDs. Returns how many of them are still live (unread, or read and not finished).
ENTRIES_LEFT = r"""
if redis.call('EXISTS', K_STREAM) == 0 then return 0 end
local ld = last_delivered()
local n = 0
for _, id in ipairs(ARGV) do
  if live(id, ld) then n = n + 1 end
end
return n
"""

# ARGV: key. Returns {pending (0/1), running (0/1)}.
BUSY = r"""
local k = ARGV[1]
local p = redis.call('HEXISTS', K_PEND, k)
local r = redis.call('HGET', K_RUN, k)
local running = 0
if r then
  local _, _, dl = parse_run(r)
  if dl > now_ms() then running = 1 end
end
return {p, running}
"""

# ARGV: the new state ('live' / 'draining' / 'destroyed'). Returns the old one.
SET_STATE = r"""
local old = redis.call('HGET', K_META, 'state')
if old == 'destroyed' then return old end
redis.call('HSET', K_META, 'state', ARGV[1])
if ARGV[1] == 'destroyed' then
  redis.call('DEL', K_STREAM, K_PEND, K_DELAYED, K_DPAY, K_RUN, K_DEFER, K_INACTIVE, K_ACTIVE,
             K_LAST)
end
return old or false
"""

# Returns how many live entries are left, 0 once drained: read and not finished (the PEL), plus
# the unread ones, counted up to 1,000 (drain needs only zero or not, and a count of a long
# unread backlog would copy it).
STREAM_LEN = r"""
if redis.call('EXISTS', K_STREAM) == 0 then return 0 end
local n = redis.call('XPENDING', K_STREAM, GROUP)[1]
local unread = redis.call('XRANGE', K_STREAM, '(' .. last_delivered(), '+', 'COUNT', 1000)
return n + #unread
"""

# Returns the counters of T:stats and the number running now, as a flat list.
STATS = r"""
local out = redis.call('HGETALL', K_STATS)
table.insert(out, 'active')
table.insert(out, redis.call('GET', K_ACTIVE) or '0')
table.insert(out, 'pending')
table.insert(out, tostring(redis.call('HLEN', K_PEND)))
return out
"""

SOURCES: dict[str, str] = {
    "declare": DECLARE,
    "queue": QUEUE,
    "queue_many": QUEUE_MANY,
    "queue_delayed": QUEUE_DELAYED,
    "mod_delayed": MOD_DELAYED,
    "promote": PROMOTE,
    "cancel": CANCEL,
    "start": START,
    "start_many": START_MANY,
    "take": TAKE,
    "finish": FINISH,
    "finish_many": FINISH_MANY,
    "renew": RENEW,
    "claim": CLAIM,
    "barrier": BARRIER,
    "barrier_done": BARRIER_DONE,
    "work_ids": WORK_IDS,
    "entries_left": ENTRIES_LEFT,
    "busy": BUSY,
    "set_state": SET_STATE,
    "stream_len": STREAM_LEN,
    "stats": STATS,
}


def _arg(v: str | int | bytes) -> bytes:
    if isinstance(v, bytes):
        return v
    if isinstance(v, str):
        return v.encode()
    return b"%d" % v


def _bulks(values: Iterable[str | int | bytes]) -> bytes:
    """The RESP bulk strings of ``values``, one after the other."""
    parts: list[bytes] = []
    for v in values:
        b = _arg(v)
        parts += (b"$%d\r\n" % len(b), b, b"\r\n")
    return b"".join(parts)


class _Lane:
    """One connection that carries every script call of an App, pipelined.

    Each call writes its command at once and waits for its own reply; one reader task hands the
    replies out in order. So calls never wait for each other (a gather of 100 enqueues is one
    stream of commands on one socket), and a call costs one write and one read, without the
    connection pool's checkout, health check and return that every redis-py command pays.
    The connection itself is redis-py's, made from the client's pool settings (URL, password,
    db, TLS), so the handshake is the client's. A lost connection fails the calls in flight
    with ``ConnectionError`` and the next call connects again.
    Context: the event loop the App is used on; a new loop gets a new connection.
    """

    __slots__ = ("_conn", "_lock", "_loop", "_make", "_pending", "_reader")

    def __init__(self, make: Callable[[], Any]) -> None:
        self._make = make
        self._conn: Any = None
        self._pending: deque[asyncio.Future[Any]] = deque()
        self._reader: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock: asyncio.Lock | None = None

    async def _connection(self) -> tuple[Any, deque[asyncio.Future[Any]]]:
        conn = self._conn
        if conn is not None and conn.is_connected and self._loop is asyncio.get_running_loop():
            return conn, self._pending
        if self._loop is not asyncio.get_running_loop():
            self._loop, self._lock, self._conn = asyncio.get_running_loop(), asyncio.Lock(), None
        assert self._lock is not None
        async with self._lock:  # one caller connects; the others wait for it
            if self._conn is None or not self._conn.is_connected:
                conn = self._make()
                await conn.connect()
                self._conn, self._pending = conn, deque()
                self._reader = asyncio.create_task(
                    self._read(conn, self._pending), name="awq-redis-lane"
                )
        return self._conn, self._pending

    async def call(self, packed: bytes) -> Any:
        """Send one packed command, return its reply (raise its error reply)."""
        conn, pending = await self._connection()
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        pending.append(fut)  # before the write: the reader pops in the order of the writes
        try:
            await conn.send_packed_command(packed, check_health=False)
        except BaseException as e:  # redis-py has closed the connection: all in flight fail
            self._fail(conn, pending, e)
            raise
        return await fut

    async def _read(self, conn: Any, pending: deque[asyncio.Future[Any]]) -> None:
        try:
            while True:
                try:
                    reply, error = await conn.read_response(), None
                except ResponseError as e:  # an error reply: the call's own answer
                    reply, error = None, e
                fut = pending.popleft()
                if fut.done():  # its caller was cancelled: the reply is dropped
                    continue
                if error is not None:
                    fut.set_exception(error)
                else:
                    fut.set_result(reply)
        except BaseException as e:
            self._fail(conn, pending, e)
            with contextlib.suppress(Exception):
                await conn.disconnect(nowait=True)
            if isinstance(e, asyncio.CancelledError):
                raise

    def _fail(self, conn: Any, pending: deque[asyncio.Future[Any]], e: BaseException) -> None:
        if self._conn is conn:
            self._conn = None
        while pending:
            fut = pending.popleft()
            if not fut.done():
                err = RedisConnectionError(f"aioworkqueue.redis: connection lost: {e!r}")
                fut.set_exception(err)

    async def aclose(self) -> None:
        """Close the connection; calls in flight fail. Context: a coroutine."""
        reader, self._reader = self._reader, None
        if reader is not None and not reader.done():
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.disconnect()


class Scripts:
    """The scripts of one client: ``await scripts.call(name, keys, *args)`` runs one.

    Context: the event loop of the client. EVALSHA on the App's pipelined connection (the
    command's head, the script's SHA and the queue's keys, is packed once per script and
    queue); on NOSCRIPT (a restarted or flushed server) the source is loaded again and the call
    repeated once.
    """

    __slots__ = ("_client", "_heads", "_lane", "_sha", "_src")

    def __init__(self, client: aioredis.Redis) -> None:
        self._client = client
        self._src = {name: PRELUDE + body for name, body in SOURCES.items()}
        self._sha = {
            name: hashlib.sha1(src.encode()).hexdigest() for name, src in self._src.items()
        }
        self._heads: dict[tuple[str, tuple[str, ...]], bytes] = {}
        pool = client.connection_pool
        self._lane = _Lane(lambda: pool.connection_class(**pool.connection_kwargs))

    def _pack(self, name: str, keys: tuple[str, ...], args: tuple[str | int | bytes, ...]) -> bytes:
        head = self._heads.get((name, keys))
        if head is None:
            head = self._heads[name, keys] = _bulks(("EVALSHA", self._sha[name], len(keys), *keys))
        return b"".join((b"*%d\r\n" % (3 + len(keys) + len(args)), head, _bulks(args)))

    async def call(self, name: str, keys: Sequence[str], *args: str | int | bytes) -> Any:
        """Run script ``name`` with ``keys`` and ``args``.

        Context: a coroutine. Returns: the script's reply. Raises: redis' ``ResponseError`` for
        the script's own errors (``AWQ destroyed`` and so on; ``_ops`` maps them),
        ``ConnectionError`` when the connection is lost.
        """
        packed = self._pack(name, tuple(keys), args)
        try:
            return await self._lane.call(packed)
        except NoScriptError:
            await self._lane.call(_bulks_command(("SCRIPT", "LOAD", self._src[name])))
            return await self._lane.call(packed)

    async def aclose(self) -> None:
        """Close the scripts' connection. Context: a coroutine."""
        await self._lane.aclose()


def _bulks_command(values: Sequence[str | int | bytes]) -> bytes:
    return b"*%d\r\n" % len(values) + _bulks(values)


# -- hand-back (a stopping worker; docs/redis.md, "Stopping a worker: the hand-back") ------------
# Kept at the end, in its own block, and registered in SOURCES here: the scripts above are the
# hot path and change on their own.
#
# ARGV: the queue's hand-back channel, consumer, then the entry IDs this consumer still runs
# (their runs would not end: left alone, to the lease). Every other entry in the consumer's PEL
# is made claimable at once: XCLAIM to itself with an idle time older than any lease, so the next
# **claim** of any worker takes it (and a message on the channel makes the workers claim now).
# A run of this consumer (cut at the stop deadline) gets an expired deadline first, so that claim
# re-runs it exactly as after a crash: in its own slot (R7), counted as redelivered, the entry
# kept in the stream until that run finishes (the flush barrier), the pending bit untouched (R1,
# R2), and a deferred instance of the key still waiting for its finish (R3). Entries that wait on
# `defer` / `inactive` are left: a finish hands them on whoever read them. An entry whose stream
# data is gone (cancelled) is only acknowledged.
# Returns {runs handed back, unstarted entries handed back, entries acknowledged}.
HANDBACK = r"""
local channel, consumer = ARGV[1], ARGV[2]
local keep = {}
for i = 3, #ARGV do keep[ARGV[i]] = true end
local now = now_ms()
local cut, unstarted, gone = 0, 0, 0
local from = '-'
while true do
  local pel = redis.call('XPENDING', K_STREAM, GROUP, from, '+', 500, consumer)
  for _, p in ipairs(pel) do
    local id = p[1]
    if not keep[id] then
      local fields = entry_fields(id)
      if not fields then
        redis.call('XACK', K_STREAM, GROUP, id)
        gone = gone + 1
      else
        local k = fields['k']
        local r = redis.call('HGET', K_RUN, k)
        local rid, rcons
        if r then rid, rcons = parse_run(r) end
        local give = false
        if rid == id then
          if rcons == consumer then
            redis.call('HSET', K_RUN, k, id .. ' ' .. consumer .. ' 0')
            cut = cut + 1
            give = true
          end
        elseif redis.call('HGET', K_DEFER, k) ~= id and not redis.call('LPOS', K_INACTIVE, id) then
          unstarted = unstarted + 1
          give = true
        end
        if give then
          redis.call('XCLAIM', K_STREAM, GROUP, consumer, 0, id, 'IDLE', now, 'JUSTID')
        end
      end
    end
  end
  if #pel < 500 then break end
  from = '(' .. pel[#pel][1]
end
if cut > 0 then redis.call('HINCRBY', K_STATS, 'handedback', cut) end
if cut + unstarted > 0 then redis.call('PUBLISH', channel, consumer) end
return {cut, unstarted, gone}
"""

SOURCES["handback"] = HANDBACK
