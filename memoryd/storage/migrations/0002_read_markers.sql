-- Durable read state: messages of a memory with seq <= last_read_seq are read on every
-- device (unread = last_message_seq - last_read_seq).
ALTER TABLE memories ADD COLUMN last_read_seq BIGINT NOT NULL DEFAULT 0;
