-- Durable background jobs (AI replies, WhatsApp inbox/outbox, transcription, embeddings):
-- stored in the same transaction as the change that needs them, leased by one node at a
-- time, retried with backoff, and visible in status. A dedupe key makes "at most one job
-- per thing" (one AI reply per message, one inbound per WhatsApp message id) a constraint.
CREATE TABLE jobs (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    kind VARCHAR(50) NOT NULL,
    user_id UUID REFERENCES users(id) ON DELETE CASCADE,
    dedupe_key VARCHAR(200),
    payload JSONB NOT NULL DEFAULT '{}',
    status VARCHAR(20) NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'running', 'done', 'failed', 'cancelled')),
    attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL DEFAULT 8,
    run_after TIMESTAMPTZ NOT NULL DEFAULT now(),
    lease_until TIMESTAMPTZ,
    leased_by VARCHAR(64),
    last_error TEXT,
    result JSONB,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX idx_jobs_dedupe ON jobs (kind, dedupe_key) WHERE dedupe_key IS NOT NULL;
CREATE INDEX idx_jobs_ready ON jobs (kind, run_after) WHERE status IN ('pending', 'running');
CREATE INDEX idx_jobs_user ON jobs (user_id, created_at DESC);
