-- Embeddings swept across users (issue 14): a write only queues its document. Before, it
-- also set its user's `search.embed` job pending, so every send updated a jobs row and
-- every message cost a job run of its own (lease, read, embed, upsert, dequeue, finish).
-- Now each node sweeps the queue: the oldest documents of any users, leased for a while
-- (so two nodes do not embed the same ones), embedded in one batch, stored, removed.
-- A document written again while leased is queued anew (a new `queued_at`, no lease),
-- so the sweep that had it leaves it queued and the next one embeds its new text.
ALTER TABLE search_embed_queue ADD COLUMN leased_until TIMESTAMPTZ;
CREATE INDEX idx_search_embed_queue_at ON search_embed_queue (queued_at);

CREATE OR REPLACE FUNCTION memoryd_queue_embedding(doc TEXT, owner UUID, gone BOOLEAN)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF NOT (SELECT embed FROM search_state) THEN
        RETURN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM users WHERE id = owner) THEN
        RETURN;  -- the user is being deleted: its rows (and vectors) go with it
    END IF;
    INSERT INTO search_embed_queue (doc_id, user_id, deleted) VALUES (doc, owner, gone)
    ON CONFLICT (doc_id) DO UPDATE SET deleted = EXCLUDED.deleted,
        queued_at = EXCLUDED.queued_at, leased_until = NULL;
END $$;
