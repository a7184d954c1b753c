-- Pages read so far (a running round rewrites its record as it goes), and why a delta round
-- read the whole tenant instead ('' when it did not fall back).
ALTER TABLE sync_runs ADD COLUMN pages_read BIGINT NOT NULL DEFAULT 0;
ALTER TABLE sync_runs ADD COLUMN delta_fallback TEXT NOT NULL DEFAULT '';
-- When the record was last written: a run its process abandoned ends there.
ALTER TABLE sync_runs ADD COLUMN recorded_at_ms BIGINT NOT NULL DEFAULT 0;
-- The runs left running by a process that died are found at the next start.
CREATE INDEX sync_runs_running ON sync_runs (tenant_id) WHERE status = 'running';
