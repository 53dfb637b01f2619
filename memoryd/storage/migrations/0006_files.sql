-- Files and voice: uploads behind a blob store (local directory or S3), their checksum and
-- kind, thumbnails, transcriptions of voice notes, and durable removal of the contents.

ALTER TABLE files
    ADD COLUMN kind VARCHAR(20) NOT NULL DEFAULT 'document'
        CHECK (kind IN ('image', 'audio', 'video', 'document')),
    ADD COLUMN sha256 CHAR(64),
    ADD COLUMN thumbnail_type VARCHAR(100);

-- Only a file's own user attaches it, and at most once: sends claim unattached files.
CREATE INDEX idx_files_unattached ON files (user_id) WHERE message_id IS NULL;

-- A files row that goes away, however it goes (DELETE /api/files, its message or memory
-- deleted, its user deleted), leaves a job that removes its contents from the blob store,
-- in the same transaction. The job has no user: it must outlive a deleted user.
CREATE FUNCTION files_enqueue_purge() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO jobs (kind, payload, max_attempts)
    VALUES ('files.purge', jsonb_build_object(
        'provider', OLD.storage_provider,
        'keys', to_jsonb(array_remove(ARRAY[OLD.storage_path, OLD.thumbnail_path], NULL))
    ), 20);
    RETURN OLD;
END $$;
CREATE TRIGGER files_purge AFTER DELETE ON files
    FOR EACH ROW EXECUTE FUNCTION files_enqueue_purge();

CREATE TABLE transcriptions (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    file_id UUID NOT NULL REFERENCES files(id) ON DELETE CASCADE,
    memory_id UUID REFERENCES memories(id) ON DELETE SET NULL,
    message_id UUID REFERENCES messages(id) ON DELETE SET NULL,
    language VARCHAR(16),  -- asked for (a hint), then the one the engine reports
    status VARCHAR(20) NOT NULL DEFAULT 'processing'
        CHECK (status IN ('processing', 'completed', 'failed')),
    text TEXT,
    confidence DOUBLE PRECISION,
    duration DOUBLE PRECISION,  -- seconds, measured from the decoded audio
    segments JSONB,
    engine VARCHAR(100),  -- which recognizer produced the text
    error TEXT,  -- why it failed (an undecodable format, the provider's refusal)
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX idx_transcriptions_user ON transcriptions (user_id, created_at DESC);
CREATE INDEX idx_transcriptions_file ON transcriptions (file_id);
