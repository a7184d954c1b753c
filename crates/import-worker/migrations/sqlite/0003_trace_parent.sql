-- The W3C traceparent of the call that started a job, so its planning and chunks continue
-- that trace wherever they run ('' when the caller sent none and no tracer was recording).
ALTER TABLE jobs ADD COLUMN trace_parent TEXT NOT NULL DEFAULT '';
