-- WhatsApp bridge: contacts as virtual participants, routing of a connected phone number
-- to its user, and lookups of messages by their WhatsApp message id (wamid).

-- One row per WhatsApp contact (wa_id) a user talks with; memory_id is the contact's thread.
-- The row is upserted first in the transaction that creates the thread, so its lock makes
-- two concurrent first messages from one contact create one thread, not two.
CREATE TABLE whatsapp_contacts (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    wa_id VARCHAR(64) NOT NULL,  -- a phone number today; Meta announced longer user ids
    name VARCHAR(255),
    memory_id UUID REFERENCES memories(id) ON DELETE SET NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (user_id, wa_id)
);
CREATE INDEX idx_whatsapp_contacts_memory ON whatsapp_contacts (memory_id);

-- A phone number id routes its webhooks to exactly one user: connected by one at a time.
CREATE UNIQUE INDEX idx_sync_settings_whatsapp_number
    ON sync_settings ((settings->>'phoneNumberId'))
    WHERE provider = 'whatsapp' AND is_enabled;

-- Status webhooks name the message by its wamid.
CREATE INDEX idx_messages_wamid ON messages (user_id, (metadata->>'wamid'))
    WHERE metadata->>'wamid' IS NOT NULL;
