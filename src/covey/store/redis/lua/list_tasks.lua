-- list_tasks: ARGV[2] a run's task set. Returns each task's {id, step, index, status, try,
-- lease no, worker, lease until}; Python orders them.

local rows = {}
for i, key in ipairs(redis.call('SMEMBERS', ARGV[2])) do
  rows[i] = redis.call('HMGET', key, 'id', 'step', 'idx', 'st', 'try', 'ln', 'w', 'lu')
end
return rows
